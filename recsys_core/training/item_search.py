"""Stage 2 of a training run: choose the item-item term's input and penalty on the validation
users, before the AE's epochs.

Which closed form fits a catalogue best differs by data: on MovieLens the liked ratings with
EASE's ridge penalty do, on sparse release-driven data (users with a handful of ratings)
every rating as input and a smaller penalty do, and EDLAE's dropout-emphasis penalty
(Steck 2020) helps some sets. No single setting wins everywhere, so each night picks its own
by a coordinate search, each point one closed-form fit scored alone (the term's top-N of
the validation users' training ratings, NDCG@10 as everywhere in training; a point replaces
the held one only by a margin of its noise, ``recsys_core.training.selection``):

1. the input feedback (``ItemItemConfig.feedbacks``) at ``l2``;
2. at the best feedback, the other lambdas (``l2s``);
3. at the best feedback and lambda, the EDLAE dropouts, each at that lambda and a quarter of it
   (the dropout penalty takes over part of the ridge's work).

The term alone steers the search; which of the fits tried the model keeps is chosen after
the AE's epochs with the blend, on the whole model (``recsys_core.training.blend``): a term
that does best alone is not always the one that best complements the AE (ml-latest-small
as of 2008: lambda 800 alone, lambda 200 with the AE). The Gram matrix of a feedback is
built once per run of points on it. The search skips a point whose predicted cost would
take it past ``search_share * max_minutes`` and goes on with the next (the first point
always runs): small data gets the whole search, the full release on 2 CPU cores the points
on its first Gram that fit, a GPU most of it. The prediction (``SearchCost``) counts the
Gram matrix the point must build first, not only its fit: at full scale the every-rating
Gram takes 50-100 s on 2 CPU cores, and a rule that ignored it overran its 180 s budget by
20% and built a 1.6 GB matrix it had no time to use; a point on the Gram already built
costs only its fit, so it can still fit where the other input did not.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from recsys_core.data.csr import RatingsCSR
from recsys_core.models.item_item import ItemItemTerm
from recsys_core.models.user_ae import UserBatch, item_inputs
from recsys_core.ranking.metrics import validation_metrics
from recsys_core.training.config import TrainConfig
from recsys_core.training.item_item import (
    GramOf,
    ItemItemFit,
    ItemItemPoint,
    build_gram,
    feedback_csr,
    fitted_films,
    solve,
)
from recsys_core.training.selection import METRIC, Selection
from recsys_core.training.validation import Validation, top_n_of

log = logging.getLogger(__name__)


@dataclass
class Search:
    """The search's best fit, its validation metrics, and every point tried (for the manifest)."""

    best: ItemItemFit
    metrics: dict
    tried: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # the points the budget skipped
    fits: list[ItemItemFit] = field(default_factory=list)  # every fit tried, in order (the blend chooses among them)
    seconds: float = 0.0  # the whole search: Gram matrices, fits and their validation

    @property
    def stopped_early(self) -> bool:
        """The time budget skipped at least one point."""
        return bool(self.skipped)

    def summary(self) -> dict:
        # "best_alone": the best term alone, which steers the search; the fit the model keeps
        # is chosen with the blend (the manifest's item_item.fit indexes "tried")
        return {"best_alone": asdict(self.best.point), "metrics": self.metrics, "tried": self.tried,
                "stopped_early": self.stopped_early, "skipped": self.skipped, "seconds": round(self.seconds, 3)}  # fmt: skip


@dataclass
class SearchCost:
    """The search's cost model, from what it has measured so far (each the slowest rate
    seen): a Gram matrix costs its seconds per entry of its input, a fit (inversion and
    pruning) its seconds per fitted film cubed (the inversion is cubic), and the term's
    validation its seconds."""

    gram_per_entry: float = 0.0  # seconds per input entry
    fit_per_film3: float = 0.0  # seconds per fitted film^3
    validation: float = 0.0  # seconds

    def saw_gram(self, seconds: float, entries: int) -> None:
        self.gram_per_entry = max(self.gram_per_entry, seconds / max(entries, 1))

    def saw_fit(self, fit_seconds: float, films: int, validation_seconds: float) -> None:
        self.fit_per_film3 = max(self.fit_per_film3, fit_seconds / max(films, 1) ** 3)
        self.validation = max(self.validation, validation_seconds)

    def predict(self, films: int, gram_entries: int) -> float:
        """Seconds of a point fitting ``films`` films, building first a Gram of
        ``gram_entries`` input entries (0: its Gram is already built)."""
        return self.gram_per_entry * gram_entries + self.fit_per_film3 * films**3 + self.validation


def term_metrics(fit: ItemItemFit, train: RatingsCSR, validation: Validation, config: TrainConfig,
                 device: torch.device) -> tuple[dict, np.ndarray]:  # fmt: skip
    """Validation metrics of the term alone (blend 1, no decay) with ``fit``'s weights, and
    its (validation users,) per-user NDCG@10 (NaN where a user cannot score)."""
    term = ItemItemTerm(train.n_films, fit.index.shape[1]).to(device)
    term.set(fit.index.to(device), fit.weight.to(device), 1.0)
    liked = config.user.liked_rating

    def score(batch: UserBatch) -> torch.Tensor:
        inputs = item_inputs(batch, fit.point.feedback, None, liked)
        return term.scores(batch.rows, batch.indices, inputs, batch.size)

    top = top_n_of(score, train, validation.users, config.top_n, config.eval_batch_size, device, liked)
    per_user: dict = {}
    metrics = validation_metrics(top, validation.relevant, per_user)
    return metrics, per_user.get(METRIC, np.full(len(validation.users), np.nan))


def search_item_item(train: RatingsCSR, validation: Validation, config: TrainConfig, device: torch.device) -> Search:
    """The best ``ItemItemFit`` on ``train`` by its validation NDCG@10 (module docstring)."""
    item, k = config.item, config.user.item_neighbours
    started = time.monotonic()
    budget = item.search_share * config.max_minutes * 60
    grams: dict[str, GramOf] = {}
    scored: dict[ItemItemPoint, float] = {}  # NDCG@10 of each point tried, in order
    search = Search(best=empty_fit(train.n_films), metrics={})
    selection = Selection()
    cost = SearchCost()
    sizes: dict[str, tuple[int, int]] = {}

    def run(point: ItemItemPoint) -> None:
        if point in scored:
            return
        spent = time.monotonic() - started
        if point.feedback not in sizes:  # (input entries, fitted films)
            data = feedback_csr(train, point.feedback, config.user.liked_rating)
            sizes[point.feedback] = len(data.indices), fitted_films(data, item.max_films)
        entries, films = sizes[point.feedback]
        predicted = cost.predict(films, 0 if point.feedback in grams else entries)
        if scored and spent + predicted > budget:
            log.debug("item-item search: %.3gs spent; skipping %s input, l2 %g, dropout %g (~%.3gs): it would pass "
                      "the budget of %.3gs", spent, point.feedback, point.l2, point.dropout, predicted, budget)  # fmt: skip
            search.skipped.append({**asdict(point), "spent_seconds": round(spent, 3),
                                   "predicted_seconds": round(predicted, 3), "budget_seconds": round(budget, 3)})  # fmt: skip
            return
        if point.feedback not in grams:
            grams.clear()  # one Gram at a time: at 20,000 films each is 1.6 GB
            grams[point.feedback] = build_gram(train, point.feedback, item.max_films, config.user.liked_rating, device)
            cost.saw_gram(grams[point.feedback].seconds, entries)
        t0 = time.monotonic()
        fit = solve(grams[point.feedback], train.n_films, k, point)
        fit.gram_seconds = grams[point.feedback].seconds
        metrics, per_user = term_metrics(fit, train, validation, config, device)
        cost.saw_fit(fit.seconds, fit.films, time.monotonic() - t0 - fit.seconds)
        value = metrics.get(METRIC, -math.inf)
        if selection.offer(point, metrics, per_user):  # by a margin over the held point (selection.py)
            search.best, search.metrics = fit, metrics
        search.fits.append(fit)
        scored[point] = value
        search.tried.append({**asdict(point), **metrics, "seconds": round(time.monotonic() - t0, 3)})
        log.info("item-item search: %s input, l2 %g, dropout %g: ndcg@10 %.4f", point.feedback, point.l2,
                 point.dropout, value)  # fmt: skip

    if k == 0:
        search.fits.append(search.best)
        return search
    for feedback in item.feedbacks:
        run(ItemItemPoint(feedback, item.l2, 0.0))
    for lam in item.l2s:
        run(ItemItemPoint(search.best.point.feedback, lam, 0.0))
    at = search.best.point
    for p in item.dropouts:
        for lam in (at.l2, at.l2 / 4):
            run(ItemItemPoint(at.feedback, lam, p))
    chosen = search.best.point
    search.seconds = time.monotonic() - started
    log.info("item-item search: %d points in %.1fs; best alone %s input, l2 %g, dropout %g (ndcg@10 %.4f)%s",
             len(scored), search.seconds, chosen.feedback, chosen.l2, chosen.dropout, scored[chosen],
             skipped_note(search.skipped, budget))  # fmt: skip
    return search


def skipped_note(skipped: list[dict], budget: float) -> str:
    """'; N points skipped ...' for the search's summary line ('' when none was)."""
    if not skipped:
        return ""
    first = skipped[0]
    return (f"; {len(skipped)} points skipped, each predicted past the budget of {budget:.3g}s (the first: "
            f"{first['feedback']} input, l2 {first['l2']:g}, dropout {first['dropout']:g}, ~{first['predicted_seconds']:.3g}s "
            f"after {first['spent_seconds']:.3g}s)")


def empty_fit(n_films: int) -> ItemItemFit:
    """A term without weights (k = 0: the term is off)."""
    return ItemItemFit(torch.zeros((n_films, 0), dtype=torch.int64), torch.zeros((n_films, 0)), 0, 0.0)
