"""Score every snapshot user on Spark executors: the same staging partition as ``jobs/score.py``.

    spark-submit jobs/score_spark.py --warehouse DIR --ds YYYY-MM-DD [--top-n 100] [--device auto|cpu|cuda]
                                     [--batch-size 2048] [--min-user-films 1] [--exact] [--torch-threads 0]

For users beyond one machine: the model is broadcast to the executors and each scores its
partitions of ``features/ds=…/users`` with torch (CUDA on executors that have it). The
executors need torch and this package (``PYSPARK_PYTHON`` of a venv that has both).
Writes ``_staging/recommendations/ds=…/`` for ``jobs/check.py`` and ``jobs/publish.py``.
"""

from __future__ import annotations

import json
import sys

from recsys_core.entrypoint import JobArgumentParser, locked, run_main, whole
from recsys_core.paths import Warehouse
from recsys_core.scoring.options import add_score_arguments, score_config


def main(argv: list[str] | None = None) -> int:
    parser = JobArgumentParser(description=__doc__)
    add_score_arguments(parser, device_help="on each executor: ")
    parser.add_argument("--torch-threads", type=whole, default=0,
                        help="torch threads per scoring task (default 0: the task's cores, spark.task.cpus)")
    args = parser.parse_args(argv)

    from recsys_core.scoring.spark_scoring import run_spark_scoring
    from recsys_core.spark.session import get_spark

    config = score_config(args)
    with locked(args.warehouse, "score", args.ds):
        spark = get_spark(f"score ds={args.ds}")
        summary = run_spark_scoring(spark, Warehouse(args.warehouse), args.ds, config, args.torch_threads)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
