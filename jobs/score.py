"""Score every snapshot user: top-N unseen films into the staging partition (torch; GPU when present).

    python jobs/score.py --warehouse DIR --ds YYYY-MM-DD [--top-n 100] [--device auto|cpu|cuda]
                         [--batch-size 2048] [--min-user-films 1]

Writes ``_staging/recommendations/ds=…/`` for ``jobs/check.py`` and ``jobs/publish.py``.
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
    parser.add_argument("--top-n", type=whole, default=defaults.TOP_N, help="films per user (default %(default)s)")
    parser.add_argument("--device", default=defaults.DEVICE, choices=["auto", "cpu", "cuda"],
                        help="auto = CUDA when available, else CPU (default %(default)s)")
    parser.add_argument("--batch-size", type=whole, default=defaults.SCORE_BATCH_USERS,
                        help="users per scoring batch (default %(default)s)")
    parser.add_argument("--min-user-films", type=whole, default=defaults.MIN_USER_FILMS,
                        help="users with fewer vocabulary ratings get the most popular unseen films (default %(default)s)")
    args = parser.parse_args(argv)

    from recsys_core.scoring.score import ScoreConfig, run_scoring

    config = ScoreConfig(top_n=args.top_n, device=args.device, batch_size=args.batch_size,
                         min_user_films=args.min_user_films)  # fmt: skip
    with locked(args.warehouse, "score", args.ds):
        summary = run_scoring(Warehouse(args.warehouse), args.ds, config)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
