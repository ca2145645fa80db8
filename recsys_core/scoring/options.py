"""The scoring jobs' command-line options, shared by ``jobs/score.py`` and ``jobs/score_spark.py``.

Both scorers take the same settings and build the same ``ScoreConfig`` from them, so the
options are defined once. No torch or Spark here: ``--help`` stays instant.
"""

from __future__ import annotations

import argparse

from recsys_core import defaults
from recsys_core.entrypoint import whole


def add_score_arguments(parser: argparse.ArgumentParser, device_help: str = "") -> None:
    """``--warehouse --ds --top-n --device --batch-size --min-user-films --exact`` with the
    defaults of ``recsys_core.defaults``."""
    parser.add_argument("--warehouse", required=True, help="warehouse root (directory or URI)")
    parser.add_argument("--ds", required=True, help="logical date YYYY-MM-DD")
    parser.add_argument("--top-n", type=whole, default=defaults.TOP_N, help="films per user (default %(default)s)")
    parser.add_argument("--device", default=defaults.DEVICE, choices=["auto", "cpu", "cuda"],
                        help=f"{device_help}auto = CUDA when available, else CPU (default %(default)s)")
    parser.add_argument("--batch-size", type=whole, default=defaults.SCORE_BATCH_USERS,
                        help="users per scoring batch (default %(default)s)")
    parser.add_argument("--min-user-films", type=whole, default=defaults.MIN_USER_FILMS,
                        help="users with fewer vocabulary ratings get the most popular unseen films (default %(default)s)")
    parser.add_argument("--exact", action="store_true",
                        help="rank every film by the reference score instead of the fast path's certified "
                             "candidates: the same rows, several times slower (to check the fast path)")


def score_config(args: argparse.Namespace):
    """The ``ScoreConfig`` of parsed scoring options (imports torch: call after parsing)."""
    from recsys_core.scoring.score import ScoreConfig

    return ScoreConfig(top_n=args.top_n, device=args.device, batch_size=args.batch_size,
                       min_user_films=args.min_user_films, exact=args.exact)  # fmt: skip
