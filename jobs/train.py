"""Train the film and user autoencoders on ``features/ds=…`` (torch; GPU when present).

    python jobs/train.py --warehouse DIR --ds YYYY-MM-DD [--epochs N] [--max-minutes M]
                         [--seed S] [--device auto|cpu|cuda] [--batch-size B] [--lr LR]
                         [--sampled-softmax auto|on|off]

Defaults come from ``recsys_core.defaults`` (the DAG's Params use the same).

Writes ``models/ds=…/`` (weights + manifest.json with validation metrics) and
``embeddings/ds=…/{users,films}``.
"""

from __future__ import annotations

import json
import sys

from recsys_core import defaults
from recsys_core.entrypoint import JobArgumentParser, locked, number, run_main, whole
from recsys_core.paths import Warehouse


def main(argv: list[str] | None = None) -> int:
    parser = JobArgumentParser(description=__doc__)
    parser.add_argument("--warehouse", required=True, help="warehouse root (directory or URI)")
    parser.add_argument("--ds", required=True, help="logical date YYYY-MM-DD")
    parser.add_argument("--epochs", type=whole, default=defaults.MAX_EPOCHS,
                        help="most user-AE epochs (default %(default)s)")
    parser.add_argument("--max-minutes", type=number, default=defaults.MAX_MINUTES,
                        help="wall-time cap of the item-item fit + user-AE loop in minutes (default %(default)s)")
    parser.add_argument("--seed", type=whole, default=defaults.SEED, help="random seed (default %(default)s)")
    parser.add_argument("--device", default=defaults.DEVICE, choices=["auto", "cpu", "cuda"],
                        help="auto = CUDA when available, else CPU (default %(default)s)")
    parser.add_argument("--batch-size", type=whole, default=None,
                        help="users per batch (default: about 5 steps per epoch, 32..1024 users)")
    parser.add_argument("--lr", type=number, default=None, help="user-AE learning rate (default: TrainConfig.lr)")
    parser.add_argument("--sampled-softmax", default="auto", choices=["auto", "on", "off"],
                        help="auto = sampled on CPU for vocabularies over 20,000 films (default %(default)s)")
    args = parser.parse_args(argv)

    from recsys_core.training.config import TrainConfig
    from recsys_core.training.train import run_training

    config = TrainConfig(seed=args.seed, device=args.device, max_epochs=args.epochs, max_minutes=args.max_minutes,
                         batch_size=args.batch_size, sampled_softmax=args.sampled_softmax)
    if args.lr is not None:
        config.lr = args.lr
    with locked(args.warehouse, "train", args.ds):
        run = run_training(Warehouse(args.warehouse), args.ds, config)
    m = run.manifest
    print(json.dumps({"ds": m["ds"], "device": m["device"], "epochs_run": m["epochs_run"],
                      "best_epoch": m["best_epoch"], "wall_seconds": m["wall_seconds"],
                      "metrics": m["metrics"]}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))

