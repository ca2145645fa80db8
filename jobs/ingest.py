"""Ingest a raw MovieLens drop into ``snapshot/ds=…`` (Spark).

    spark-submit jobs/ingest.py --raw DIR --warehouse DIR --ds YYYY-MM-DD [--max-reject-share 0.01]
"""

from __future__ import annotations

import argparse
import sys

from recsys_core.entrypoint import run_main
from recsys_core.paths import Warehouse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", required=True, help="directory (or URI) of the MovieLens CSVs")
    parser.add_argument("--warehouse", required=True, help="warehouse root (directory or URI)")
    parser.add_argument("--ds", required=True, help="logical date YYYY-MM-DD; keeps ratings before its end (UTC)")
    parser.add_argument("--max-reject-share", type=float, default=0.01,
                        help="fail when more than this share of a file's rows is rejected (default 0.01)")
    args = parser.parse_args(argv)

    from recsys_core.spark.ingest import run_ingest
    from recsys_core.spark.session import get_spark

    spark = get_spark(f"ingest ds={args.ds}")
    summary = run_ingest(spark, args.raw, Warehouse(args.warehouse), args.ds, args.max_reject_share)
    print(summary.render())
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
