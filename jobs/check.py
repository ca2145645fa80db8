"""The quality gate: check the scored staging partition before it may be published.

    python jobs/check.py --warehouse DIR --ds YYYY-MM-DD [--min-model-ratio 1.1]

Exit 0 and a JSON of figures when every contract holds (``_check.json`` is written for
publish); exit 2 with a report naming each broken contract otherwise.
"""

from __future__ import annotations

import json
import sys

from recsys_core import defaults
from recsys_core.entrypoint import JobArgumentParser, locked, number, run_main
from recsys_core.paths import Warehouse


def main(argv: list[str] | None = None) -> int:
    parser = JobArgumentParser(description=__doc__)
    parser.add_argument("--warehouse", required=True, help="warehouse root (directory or URI)")
    parser.add_argument("--ds", required=True, help="logical date YYYY-MM-DD")
    parser.add_argument("--min-model-ratio", type=number, default=defaults.MIN_MODEL_RATIO,
                        help="the model's validation NDCG@10 must be >= this x popularity's (default %(default)s)")
    args = parser.parse_args(argv)

    from recsys_core.scoring.check import run_check

    with locked(args.warehouse, "check", args.ds):
        report = run_check(Warehouse(args.warehouse), args.ds, args.min_model_ratio)
    print(json.dumps(report.figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
