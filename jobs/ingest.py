"""Ingest a raw MovieLens drop into ``snapshot/ds=…`` (Spark).

    spark-submit jobs/ingest.py --raw DIR --warehouse DIR --ds YYYY-MM-DD [--max-reject-share 0.01]
                                [--encoding latin-1 | --encoding movies.csv=latin-1 ...] [--layout auto]

The release layout (20M/25M/32M/latest CSV, 10M or 1M ``.dat``, 100K ``u.data``/``u.item``)
is detected from the files present. Files are read as UTF-8 (Latin-1 for 1M and 100K);
``--encoding`` reads every file, or one file (``FILE=ENC``, repeatable), in another.
"""

from __future__ import annotations

import sys

from recsys_core import defaults
from recsys_core.entrypoint import JobArgumentParser, locked, number, run_main
from recsys_core.paths import Warehouse


def main(argv: list[str] | None = None) -> int:
    from recsys_core.data.layouts import LAYOUTS, SUPPORTED_ENCODINGS

    parser = JobArgumentParser(description=__doc__)
    parser.add_argument("--raw", required=True, help="directory (or URI) of the MovieLens files")
    parser.add_argument("--warehouse", required=True, help="warehouse root (directory or URI)")
    parser.add_argument("--ds", required=True, help="logical date YYYY-MM-DD; keeps ratings before its end (UTC)")
    parser.add_argument("--max-reject-share", type=number, default=defaults.MAX_REJECT_SHARE,
                        help="fail when more than this share of a file's rows is rejected (default %(default)s)")
    parser.add_argument("--encoding", action="append", metavar="[FILE=]ENCODING",
                        help=f"read every file (or FILE) in ENCODING: {', '.join(SUPPORTED_ENCODINGS.values())}; "
                             "repeatable, or comma-separated; empty: none. Default: the layout's (UTF-8; "
                             "Latin-1 for 1M and 100K)")
    parser.add_argument("--layout", default="auto", choices=["auto", *LAYOUTS],
                        help="release layout (default: detected from the files present)")
    args = parser.parse_args(argv)

    from recsys_core.spark.ingest import run_ingest
    from recsys_core.spark.session import get_spark

    with locked(args.warehouse, "ingest", args.ds):
        spark = get_spark(f"ingest ds={args.ds}")
        summary = run_ingest(spark, args.raw, Warehouse(args.warehouse), args.ds, args.max_reject_share,
                             encoding=encodings(args.encoding), layout=args.layout)
    print(summary.render())
    return 0


def encodings(values: list[str] | None) -> list[str] | None:
    """``--encoding`` values split on commas (the DAG passes one, possibly empty, value)."""
    parts = [part.strip() for value in values or [] for part in value.split(",") if part.strip()]
    return parts or None


if __name__ == "__main__":
    sys.exit(run_main(main))
