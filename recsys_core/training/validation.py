"""Nightly validation: a seeded sample of users hides its latest ratings, and the model and
popularity are scored on them with the same top-N and metrics as scoring and the offline
evaluation (``recsys_core.ranking``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from recsys_core.data.csr import LIKED_RATING, RatingsCSR, gather_entries
from recsys_core.device import autocast
from recsys_core.models.user_ae import UserAE, UserBatch, user_batch
from recsys_core.ranking.holdout import HOLDOUT_FRACTION, MIN_HOLDOUT_RATINGS, holdout_mask
from recsys_core.ranking.metrics import validation_metrics
from recsys_core.ranking.top_n import top_n_lists

ScoreFn = Callable[[UserBatch], torch.Tensor]  # a batch -> (B, n_films) scores


@dataclass
class Validation:
    """Validation users: their input is the training CSR, i.e. without the hidden entries."""

    users: np.ndarray  # (n_val,) int64 user rows
    relevant: RatingsCSR  # (n_val rows) hidden entries with rating >= the liked rating
    n_hidden: int  # hidden ratings of the validation users, relevant or not


def split_validation(
    csr: RatingsCSR,
    n_users: int,
    seed: int,
    holdout_fraction: float = HOLDOUT_FRACTION,
    min_ratings: int = MIN_HOLDOUT_RATINGS,
    liked_rating: float = LIKED_RATING,
) -> tuple[RatingsCSR, Validation]:
    """Hide the latest ratings (``recsys_core.ranking.holdout``) of a seeded sample of users.

    Candidates have at least ``min_ratings`` ratings; those whose hidden part has no liked
    (relevant) rating are skipped (they cannot score). At most ``n_users`` are taken.
    Returns the training CSR (all users, validation users without their hidden ratings)
    and the validation targets.
    """
    candidates = np.flatnonzero(csr.counts >= min_ratings)
    rng = np.random.default_rng([seed, 7])
    candidates = rng.permutation(candidates)
    chosen: list[np.ndarray] = []
    hidden_pos: list[np.ndarray] = []
    taken, step = 0, max(2 * n_users, 1)
    for lo in range(0, len(candidates), step):
        if taken >= n_users:
            break
        block = candidates[lo : lo + step]  # random order
        by_id = np.argsort(block)
        good, (h_pos, h_rows) = _hide_latest(csr, block[by_id], holdout_fraction, min_ratings, liked_rating)
        good = good[np.argsort(by_id[np.searchsorted(block[by_id], good)])][: n_users - taken]
        chosen.append(good)
        hidden_pos.append(h_pos[np.isin(h_rows, good)])
        taken += len(good)
    val_users = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    hidden_all = np.sort(np.concatenate(hidden_pos)) if hidden_pos else np.zeros(0, dtype=np.int64)
    keep = np.ones(len(csr.indices), dtype=bool)
    keep[hidden_all] = False
    train = csr.select_entries(keep)
    relevant = csr.select_entries(~keep & (csr.ratings >= liked_rating)).select_rows(val_users)
    return train, Validation(val_users, relevant, len(hidden_all))


def _hide_latest(csr: RatingsCSR, users: np.ndarray, fraction: float, min_ratings: int,
                 liked_rating: float) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """For sorted ``users``: those (sorted) with a liked hidden rating, and the hidden
    entries as (positions, rows)."""
    positions, counts = gather_entries(csr.indptr, users)
    rows = np.repeat(users, counts)
    hidden = holdout_mask(rows, csr.indices[positions], csr.timestamps[positions], fraction, min_ratings)
    h_pos, h_rows = positions[hidden], rows[hidden]
    good = np.unique(h_rows[csr.ratings[h_pos] >= liked_rating])
    return good, (h_pos, h_rows)


def top_n_of(score_fn: ScoreFn, csr: RatingsCSR, users: np.ndarray, n: int, batch_size: int,
             device: torch.device, liked_rating: float = LIKED_RATING) -> np.ndarray:  # fmt: skip
    """(len(users), min(n, n_films)) best unseen films per user by ``score_fn``, -1 padded.

    The scoring job's top-N (``recsys_core.ranking.top_n``): rated films excluded, ties by
    film_idx (movieId order).
    """
    out = np.full((len(users), min(n, csr.n_films)), -1, dtype=np.int64)
    for lo in range(0, len(users), batch_size):
        batch = user_batch(csr, users[lo : lo + batch_size], liked_rating=liked_rating).to(device)
        scores = score_fn(batch).float().contiguous()
        out[lo : lo + batch.size] = top_n_lists(scores, batch.rows, batch.indices, n)
    return out


def popularity_metrics(train: RatingsCSR, validation: Validation, top_n: int, device: torch.device) -> dict:
    """The baseline's validation metrics: films by number of training ratings, rated ones excluded."""
    counts = torch.from_numpy(train.film_counts().astype(np.float32)).to(device)

    def score(batch: UserBatch) -> torch.Tensor:
        return counts.expand(batch.size, -1).clone()

    return validation_metrics(top_n_of(score, train, validation.users, top_n, 4096, device), validation.relevant)


def model_metrics(model: UserAE, train: RatingsCSR, validation: Validation, top_n: int, batch_size: int,
                  device: torch.device, bf16: bool) -> dict:  # fmt: skip
    """The model's validation metrics (NDCG@10, Recall@20, NDCG@100) from its full scores."""
    model.eval()

    def score(batch: UserBatch) -> torch.Tensor:
        with autocast(device, bf16):
            return model(batch)

    with torch.no_grad():
        top = top_n_of(score, train, validation.users, top_n, batch_size, device, model.config.liked_rating)
    return validation_metrics(top, validation.relevant)
