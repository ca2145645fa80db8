"""Build ``features/ds=…/{films,users}`` from ``snapshot/ds=…`` (Spark).

    spark-submit jobs/features.py --warehouse DIR --ds YYYY-MM-DD [--min-film-ratings 1]
"""

from __future__ import annotations

import argparse
import json
import sys

from recsys_core.entrypoint import run_main
from recsys_core.paths import Warehouse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", required=True, help="warehouse root (directory or URI)")
    parser.add_argument("--ds", required=True, help="logical date YYYY-MM-DD")
    parser.add_argument("--min-film-ratings", type=int, default=1,
                        help="films need at least this many ratings in the snapshot to enter the vocabulary")
    args = parser.parse_args(argv)

    from recsys_core.spark.features import run_features
    from recsys_core.spark.session import get_spark

    spark = get_spark(f"features ds={args.ds}")
    manifest = run_features(spark, Warehouse(args.warehouse), args.ds, args.min_film_ratings)
    print(json.dumps({"ds": manifest["ds"], **manifest["counts"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
