"""Publish the scored recommendations of one ``ds``: Parquet table, SQL table, retention.

    python jobs/publish.py --warehouse DIR --ds YYYY-MM-DD [--sql-url URL] [--keep 30]
                           [--table recommendations] [--schema NAME]

Reads ``_staging/recommendations/ds=…`` (written by the score job), swaps it in as
``recommendations/ds=…`` and replaces that ``ds`` in the SQL table in one transaction.
The SQL URL is ``--sql-url``, else ``$RECSYS_SQL_URL``, else the SQLite file
``recommendations.db`` in the warehouse. Prints a JSON summary.
"""

from __future__ import annotations

import json
import os
import sys

from recsys_core import defaults
from recsys_core.entrypoint import JobArgumentParser, locked, run_main, whole
from recsys_core.paths import Warehouse


def main(argv: list[str] | None = None) -> int:
    parser = JobArgumentParser(description=__doc__)
    parser.add_argument("--warehouse", required=True, help="warehouse root (directory or URI)")
    parser.add_argument("--ds", required=True, help="logical date YYYY-MM-DD of the scored partition")
    parser.add_argument("--sql-url", default=None,
                        help="sqlite:///PATH.db or postgresql://USER:PASSWORD@HOST:PORT/DB "
                             "(default: $RECSYS_SQL_URL, else sqlite in the warehouse)")
    parser.add_argument("--keep", type=whole, default=defaults.KEEP,
                        help="ds partitions to keep, newest first (default %(default)s)")
    parser.add_argument("--table", default=defaults.SQL_TABLE, help="SQL table name (default %(default)s)")
    parser.add_argument("--schema", default=None, help="PostgreSQL schema (default: the search_path)")
    args = parser.parse_args(argv)

    from recsys_core.publish.publish import run_publish

    sql_url = args.sql_url or os.environ.get("RECSYS_SQL_URL") or None
    with locked(args.warehouse, "publish", args.ds):
        summary = run_publish(Warehouse(args.warehouse), args.ds, sql_url=sql_url, keep=args.keep,
                              table=args.table, schema=args.schema)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
