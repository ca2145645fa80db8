"""Build ``features/ds=…/{films,users}`` from ``snapshot/ds=…`` (Spark).

    spark-submit jobs/features.py --warehouse DIR --ds YYYY-MM-DD [--min-film-ratings 1]
"""

from __future__ import annotations

import json
import sys

from recsys_core import defaults
from recsys_core.entrypoint import JobArgumentParser, locked, run_main, whole
from recsys_core.paths import Warehouse


def main(argv: list[str] | None = None) -> int:
    parser = JobArgumentParser(description=__doc__)
    parser.add_argument("--warehouse", required=True, help="warehouse root (directory or URI)")
    parser.add_argument("--ds", required=True, help="logical date YYYY-MM-DD")
    parser.add_argument("--min-film-ratings", type=whole, default=defaults.MIN_FILM_RATINGS,
                        help="films need at least this many ratings in the snapshot to enter the vocabulary "
                             "(default %(default)s)")
    args = parser.parse_args(argv)

    from recsys_core.spark.features import run_features
    from recsys_core.spark.session import get_spark

    with locked(args.warehouse, "build_features", args.ds):
        spark = get_spark(f"features ds={args.ds}")
        manifest = run_features(spark, Warehouse(args.warehouse), args.ds, args.min_film_ratings)
    print(json.dumps({"ds": manifest["ds"], **manifest["counts"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
