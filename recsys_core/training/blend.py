"""Stage 4 of a training run: give the user AE its item-item term and its recent-popularity
term, and choose the item-item blend, the recency half-life of its input, and the window
and weight of recent popularity on the validation users.

A coordinate search (each point the whole model's validation NDCG@10; a point replaces the
held one only by a margin of its noise, ``recsys_core.training.selection``, so the simpler
settings tried first are kept unless another is clearly better):

1. every blend of ``ItemItemConfig.blends`` with each fit the item-item search tried, in its
   order, without decay (blend 0 is the AE alone);
2. at that blend, every half-life of ``ItemItemConfig.half_lives`` (the input weighted
   toward the user's latest ratings, ``recsys_core.data.recency``);
3. at the chosen half-life, every blend again (the decay shrinks the term's scale);
4. every window x weight of ``TrainConfig.recent_windows`` / ``recent_weights`` of the
   recent-popularity term (``recsys_core.models.recent_popularity``; weight 0, off, is the
   point reached so far);
5. when it is on, every blend again.

The AE's logits of the validation users are computed once and kept when they fit in
``CACHE_BYTES`` (only the terms change between points); every point is scored by the
model's own terms, so the chosen setting is exactly what scoring adds.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from recsys_core.data.csr import RatingsCSR
from recsys_core.device import autocast
from recsys_core.models.recent_popularity import BIN_DAYS, LikeCounts
from recsys_core.models.user_ae import UserAE, user_batch
from recsys_core.ranking.metrics import validation_metrics
from recsys_core.ranking.top_n import top_n_lists
from recsys_core.training.config import TrainConfig
from recsys_core.training.item_item import ItemItemFit
from recsys_core.training.selection import METRIC, Selection
from recsys_core.training.validation import Validation

log = logging.getLogger(__name__)
CACHE_BYTES = 2 << 30  # keep the validation users' AE logits when they take at most this


@dataclass(frozen=True)
class TermSetting:
    fit: int  # which fit of the item-item search (0: its first point); 0 whenever blend is 0
    blend: float
    half_life: float | None  # in ratings; None: no decay
    window: int = 0  # recent popularity's window in bins of BIN_DAYS (0 with weight 0: off)
    popularity: float = 0.0  # recent popularity's weight


class ValidationScorer:
    """The model's validation metrics for any term setting, the AE's logits computed once."""

    def __init__(self, model: UserAE, fits: list[ItemItemFit], train: RatingsCSR, validation: Validation,
                 config: TrainConfig, device: torch.device, bf16: bool):  # fmt: skip
        self.model, self.fits, self.fit_in_use = model, fits, -1
        self.validation, self.top_n = validation, config.top_n
        self.device, self.bf16 = device, bf16
        users, size = validation.users, config.eval_batch_size
        self.batches = [user_batch(train, users[lo : lo + size], liked_rating=model.config.liked_rating).to(device)
                        for lo in range(0, len(users), size)]  # fmt: skip
        self.cache = len(users) * train.n_films * 4 <= CACHE_BYTES
        self.logits = [self._logits(batch) for batch in self.batches] if self.cache else None
        self.counts = LikeCounts(train, model.config.liked_rating)
        self.window_in_use = 0  # the window the model's recent-popularity term holds (0: none yet)

    def use(self, i: int) -> None:
        """Give the model the item-item weights and input of ``self.fits[i]``."""
        if i != self.fit_in_use:
            fit = self.fits[i]
            self.model.item_item.set(fit.index.to(self.device), fit.weight.to(self.device))
            self.model.config.item_feedback = fit.point.feedback
            self.fit_in_use = i

    def _logits(self, batch) -> torch.Tensor:
        with torch.no_grad(), autocast(self.device, self.bf16):
            return self.model.ae_logits(batch).float()

    def apply(self, setting: TermSetting) -> None:
        """Give the model ``setting``: its fit, blend, half-life and recent popularity (the
        counts of an unused term are dropped: the checkpoint does not carry them)."""
        model = self.model
        self.use(setting.fit)
        model.item_item.set_blend(setting.blend)
        model.config.item_half_life = setting.half_life if setting.blend > 0 else None
        window = setting.window if setting.popularity else 0
        if window != self.window_in_use:
            model.recent.set(self.counts, window, setting.popularity)
            self.window_in_use = window
        model.recent.weight.fill_(setting.popularity)

    def metrics(self, setting: TermSetting) -> tuple[dict, np.ndarray]:
        """(validation metrics, (validation users,) per-user NDCG@10) of the model at ``setting``."""
        model = self.model
        self.apply(setting)
        model.eval()
        tops = []
        with torch.no_grad():
            for i, batch in enumerate(self.batches):
                logits = self.logits[i].clone() if self.logits is not None else self._logits(batch)
                scores = model.add_item_scores(logits, batch)
                tops.append(top_n_lists(scores, batch.rows, batch.indices, self.top_n))
        top = np.concatenate(tops) if tops else np.zeros((0, self.top_n), dtype=np.int64)
        per_user: dict = {}
        metrics = validation_metrics(top, self.validation.relevant, per_user)
        return metrics, per_user.get(METRIC, np.full(len(self.validation.users), np.nan))


def choose_blend(model: UserAE, fits: list[ItemItemFit], ae_metrics: dict, train: RatingsCSR,
                 validation: Validation, config: TrainConfig, device: torch.device,
                 bf16: bool) -> tuple[dict, dict, ItemItemFit]:  # fmt: skip
    """Give ``model`` one of the item-item terms ``fits`` (the search's, on ``train``, in the
    order tried) and choose it, its blend, half-life and recent popularity on ``validation``
    (module docstring; stage 1 tries every blend of every fit).

    Returns (a summary for the manifest, the validation metrics of the chosen setting, the
    chosen fit) and leaves ``model`` with that setting (blend 0: the AE alone, no decay).
    """
    if not fits:
        raise ValueError("choose_blend needs at least one item-item fit")
    scorer = ValidationScorer(model, fits, train, validation, config, device, bf16)
    grid: list[dict] = []
    tried: set[TermSetting] = set()
    selection = Selection()

    def run(setting: TermSetting) -> None:
        if setting in tried:
            return
        tried.add(setting)
        metrics, per_user = scorer.metrics(setting)
        selection.offer(setting, metrics, per_user)
        grid.append({"fit": setting.fit, "blend": setting.blend, "half_life": setting.half_life, "window": setting.window,
                     "popularity": setting.popularity, **metrics})  # fmt: skip

    def best() -> TermSetting:
        assert selection.best is not None  # blends is non-empty (TrainConfig.validate)
        return selection.best

    blends = sorted(config.item.blends)
    for i in range(len(fits)):
        for blend in blends:
            run(TermSetting(i if blend > 0 else 0, blend, None))
    at = best()
    if at.blend > 0 and fits[at.fit].films:
        for half_life in sorted(config.item.half_lives):
            run(TermSetting(at.fit, at.blend, half_life))
        at = best()
        if at.half_life is not None:
            for blend in blends:
                if blend > 0:
                    run(TermSetting(at.fit, blend, at.half_life))
    at = best()
    for window in config.recent_windows:
        for weight in config.recent_weights:
            run(TermSetting(at.fit, at.blend, at.half_life, window, weight))
    at = best()
    if at.popularity and at.blend > 0:
        for blend in blends:
            run(TermSetting(at.fit if blend > 0 else 0, blend, at.half_life, at.window, at.popularity))
    chosen = best()
    scorer.apply(chosen)
    metrics = selection.metrics
    log.info("item-item blend %.1f, half-life %s; recent popularity %d bins x %g: validation ndcg@10 %.4f "
             "(AE alone %.4f)", chosen.blend, model.config.item_half_life, chosen.window, chosen.popularity,
             metrics.get("ndcg@10", math.nan), ae_metrics.get("ndcg@10", math.nan))  # fmt: skip
    fit = fits[chosen.fit]
    point = fit.point
    summary = {"fit": chosen.fit, "films": fit.films, "neighbours": config.user.item_neighbours, "feedback": point.feedback,
               "l2": point.l2, "dropout": point.dropout, "blend": chosen.blend,
               "half_life": model.config.item_half_life, "seconds": round(fit.seconds, 3),
               "recent": {"window_bins": chosen.window, "bin_days": BIN_DAYS, "weight": chosen.popularity},
               "grid": grid}  # fmt: skip
    return summary, metrics, fit
