"""Recency of a user's ratings: each rating's age in the user's own rating order, and the
exponential decay that weighs a user's input toward their latest ratings.

The age of a rating is its position counted back from the user's latest rating, the user's
ratings ordered by (timestamp, film index) — film indices follow movieId, so ties in time
break by movieId as in the holdout rule (``recsys_core.ranking.holdout``). The latest
rating has age 0. The weight of a rating is ``0.5 ** (age / half_life)`` (half-life in
ratings, not days: a user who rates a hundred films in one evening and one who rates a
film a month both decay by their own pace). Used by the model's item-item term
(``recsys_core.models.user_ae``) and by the recency-weighted baselines
(``recsys_core.evaluation.baselines_linear``).
"""

from __future__ import annotations

import math

import numpy as np

from recsys_core.data.csr import RatingsCSR


def entry_ages(rows: np.ndarray, films: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """(nnz,) int64 age of every entry within its row.

    ``rows``: (nnz,) int64 row of each entry, non-decreasing (the entries of one row are
    contiguous, as in a CSR or a ``UserBatch``); ``films`` (nnz,) film index and
    ``timestamps`` (nnz,) seconds of each entry. Raises ValueError on mismatched lengths.
    """
    if not len(rows) == len(films) == len(timestamps):
        raise ValueError(f"rows, films and timestamps differ in length: {len(rows)}, {len(films)}, {len(timestamps)}")
    if not len(rows):
        return np.zeros(0, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    counts = np.bincount(rows)
    first = np.cumsum(counts) - counts
    order = np.lexsort((films, timestamps, rows))  # by row, then time, then film
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order), dtype=np.int64) - first[rows[order]]
    return counts[rows] - 1 - position


def rating_ages(data: RatingsCSR) -> np.ndarray:
    """(nnz,) int64 age of every entry of ``data`` in its user's rating order (module docstring)."""
    return entry_ages(data.entry_rows(), data.indices, data.timestamps)


def recency_weights(ages: np.ndarray, half_life: float | None) -> np.ndarray:
    """(len(ages),) float64 weights ``0.5 ** (ages / half_life)``; 1 for every age when
    ``half_life`` is None or inf (no decay). Raises ValueError unless ``half_life > 0``."""
    if half_life is None or math.isinf(half_life):
        return np.ones(len(ages), dtype=np.float64)
    if not half_life > 0:
        raise ValueError(f"half_life must be > 0 (None or inf: no decay), got {half_life}")
    return np.exp2(-np.asarray(ages, dtype=np.float64) / half_life)
