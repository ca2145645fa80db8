"""The training job's settings, each default written once: ``TrainConfig``.

``jobs/train.py`` (its ``--help``) and the DAG's Params read their defaults from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from recsys_core import defaults
from recsys_core.device import DEVICES
from recsys_core.errors import ConfigError
from recsys_core.models.film_ae import FilmAEConfig
from recsys_core.models.user_ae import UserAEConfig
from recsys_core.ranking.holdout import HOLDOUT_FRACTION, MIN_HOLDOUT_RATINGS
from recsys_core.training.item_item import ItemItemConfig

SAMPLED_SOFTMAX = ("auto", "on", "off")


@dataclass
class TrainConfig:
    seed: int = defaults.SEED
    device: str = defaults.DEVICE  # one of recsys_core.device.DEVICES
    max_epochs: int = defaults.MAX_EPOCHS
    max_minutes: float = defaults.MAX_MINUTES  # wall-time cap of the item-item fit + user-AE loop (checked before every batch)
    # Early stopping: stop after this many optimizer steps without a better validation
    # NDCG@10, counted in whole epochs and at least min_patience_epochs (patience_epochs).
    patience_steps: int = 100
    min_patience_epochs: int = 3
    batch_size: int | None = None  # None: auto_batch_size(number of training users)
    lr: float = 3e-3
    weight_decay: float = 0.0
    film_epochs: int = 20
    film_batch_size: int = 512
    film_lr: float = 1e-3
    # validation: a seeded sample of users hides its latest ratings (recsys_core.ranking.holdout)
    val_users: int = 5000
    holdout_fraction: float = HOLDOUT_FRACTION
    min_val_ratings: int = MIN_HOLDOUT_RATINGS
    # Loss targets: liked ratings (>= user.liked_rating) weigh 1, lower ones low_target_weight
    # (every rating is still an input). 1: every rating is a target of weight 1.
    low_target_weight: float = 0.0
    # After early stopping, train a fresh model on every rating (validation users' hidden
    # ones included) for the best number of epochs, when validation hid at least this
    # share of the ratings (small data: all users validate; full release: ~0.4%, no refit).
    refit_min_hidden_share: float = 0.02
    eval_batch_size: int = 1024
    top_n: int = 100
    # "auto": the sampled softmax on CPU when the vocabulary exceeds sampled_min_films
    # films (full release: ~5x faster epochs), the exact softmax otherwise; "on" / "off".
    sampled_softmax: str = "auto"
    sampled_min_films: int = 20_000
    negatives: int = 4096  # uniformly drawn films per batch for the sampled softmax
    # recent popularity (recsys_core.models.recent_popularity), chosen with the blend on the
    # validation users: windows in bins of 30 days (1 month .. 3 years) and weights (0: off)
    recent_windows: tuple[int, ...] = (1, 3, 12, 36)
    recent_weights: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    film: FilmAEConfig = field(default_factory=FilmAEConfig)
    user: UserAEConfig = field(default_factory=UserAEConfig)
    item: ItemItemConfig = field(default_factory=ItemItemConfig)

    def validate(self) -> None:
        """Raises ConfigError naming the first setting out of range."""
        if self.device not in DEVICES:
            raise ConfigError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.sampled_softmax not in SAMPLED_SOFTMAX:
            raise ConfigError(f"sampled_softmax must be auto, on or off, got {self.sampled_softmax!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        for name in ("max_epochs", "val_users", "eval_batch_size", "top_n", "negatives", "patience_steps",
                     "min_patience_epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.lr < math.inf:
            raise ConfigError(f"--lr must be a finite number > 0, got {self.lr}")
        if self.seed < 0:
            raise ConfigError(f"--seed must be >= 0, got {self.seed}")
        try:
            self.user.validate()
        except ValueError as exc:
            raise ConfigError(f"user: {exc}") from exc
        if self.max_minutes <= 0:
            raise ConfigError(f"max_minutes must be > 0, got {self.max_minutes}")
        if self.low_target_weight < 0:
            raise ConfigError(f"low_target_weight must be >= 0, got {self.low_target_weight}")
        if self.user.item_neighbours < 0:
            raise ConfigError(f"user.item_neighbours must be >= 0, got {self.user.item_neighbours}")
        if min(self.recent_windows, default=1) < 1 or min(self.recent_weights, default=0) < 0:
            raise ConfigError(f"recent_windows must be >= 1 and recent_weights >= 0, got {self.recent_windows}, "
                              f"{self.recent_weights}")  # fmt: skip
        try:
            self.item.validate()
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        if not 0.0 <= self.user.input_dropout < 1.0:
            raise ConfigError(f"user.input_dropout must be in [0, 1), got {self.user.input_dropout}")


def patience_epochs(patience_steps: int, steps_per_epoch: float, min_epochs: int) -> int:
    """Epochs without a better validation NDCG@10 before the user AE stops: the patience is a
    number of optimizer steps, not epochs, so that it means the same learning at every size.

    ``steps_per_epoch``: training users / batch size, unrounded (a last, partial batch
    counts by its share). Small data has ~5 steps per epoch (``auto_batch_size``): 100 steps
    are the 20 epochs tuned there (a rounded-up 6 gave 17, and cost ml-latest-small as of
    2008 its best epoch, 34, stopping at 27). The full release has ~277 steps per epoch: 20
    epochs would be 5,540 steps, and there the AE peaked at epoch 5 of 19 and wandered until
    the time cap; 100 steps round up to one epoch, and ``min_epochs`` (3) keeps a margin for
    an epoch's noise.
    """
    return max(min_epochs, math.ceil(round(patience_steps / max(steps_per_epoch, 1e-9), 6)))


def auto_batch_size(n_users: int) -> int:
    """About 5 steps per epoch, between 32 and 1024 users per batch.

    On ml-latest-small (610 users, lr 3e-3) larger batches generalized better: test
    NDCG@10 0.101 / 0.115 at 64 / 128 users per batch. At full scale 1,024 users per batch
    keep the per-step overhead (optimizer over the dense encoder/decoder tables) small.
    """
    return int(min(1024, max(32, n_users // 5)))
