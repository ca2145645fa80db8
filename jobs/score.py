"""Score every snapshot user: top-N unseen films into the staging partition (torch; GPU when present).

    python jobs/score.py --warehouse DIR --ds YYYY-MM-DD [--top-n 100] [--device auto|cpu|cuda]
                         [--batch-size 2048] [--min-user-films 1] [--exact]

Writes ``_staging/recommendations/ds=…/`` for ``jobs/check.py`` and ``jobs/publish.py``.
"""

from __future__ import annotations

import json
import sys

from recsys_core.entrypoint import JobArgumentParser, locked, run_main
from recsys_core.paths import Warehouse
from recsys_core.scoring.options import add_score_arguments, score_config


def main(argv: list[str] | None = None) -> int:
    parser = JobArgumentParser(description=__doc__)
    add_score_arguments(parser)
    args = parser.parse_args(argv)

    from recsys_core.scoring.score import run_scoring

    config = score_config(args)
    with locked(args.warehouse, "score", args.ds):
        summary = run_scoring(Warehouse(args.warehouse), args.ds, config)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
