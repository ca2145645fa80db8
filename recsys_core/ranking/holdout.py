"""The temporal per-user holdout, stated once: each user's latest ratings are held out.

A user with ``min_ratings`` (default 5) or more ratings holds out the last
``max(1, floor(fraction * n))`` of their ``n`` ratings, ordered by (timestamp, movieId);
others hold out none. Ratings >= ``LIKED_RATING`` of the held-out part are the relevant
films. The nightly validation of training (``recsys_core.training.validation``) and the
offline evaluation (``recsys_core.evaluation.split``) both hide ratings with this rule, so
their figures measure the same thing.
"""

from __future__ import annotations

import numpy as np

from recsys_core.errors import ConfigError

HOLDOUT_FRACTION = 0.2
MIN_HOLDOUT_RATINGS = 5


def holdout_sizes(counts: np.ndarray, fraction: float = HOLDOUT_FRACTION,
                  min_ratings: int = MIN_HOLDOUT_RATINGS) -> np.ndarray:  # fmt: skip
    """(n_users,) int64 held-out ratings of users with ``counts`` ratings each: the rule.

    Raises ConfigError for a fraction outside (0, 1) or ``min_ratings`` < 2.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"holdout fraction must be in (0, 1), got {fraction}")
    if min_ratings < 2:
        raise ConfigError(f"min_ratings must be >= 2, got {min_ratings}")
    counts = np.asarray(counts, dtype=np.int64)
    # + 1e-9: 0.2 * 15 is 3.0000000000000004 in floating point, and floor must give 3
    sizes = np.maximum(1, np.floor(counts * fraction + 1e-9)).astype(np.int64)
    return np.where(counts >= min_ratings, sizes, 0)


def holdout_mask(users: np.ndarray, movies: np.ndarray, timestamps: np.ndarray,
                 fraction: float = HOLDOUT_FRACTION, min_ratings: int = MIN_HOLDOUT_RATINGS) -> np.ndarray:  # fmt: skip
    """(n,) bool per rating: is it in its user's held-out tail.

    ``users``, ``movies``, ``timestamps``: (n,) arrays of any order (movies break timestamp
    ties). Raises ConfigError for a fraction outside (0, 1) or ``min_ratings`` < 2.

    Users with ``min_ratings`` or more ratings hold out their last
    max(1, floor(fraction * n)) ratings by (timestamp, movieId); others hold out none.
    """
    users = np.asarray(users)
    order = np.lexsort((np.asarray(movies), np.asarray(timestamps), users))
    u = users[order]
    if len(u) == 0:
        holdout_sizes(np.zeros(0), fraction, min_ratings)  # the same parameter errors
        return np.zeros(0, dtype=bool)
    starts = np.flatnonzero(np.concatenate([[True], u[1:] != u[:-1]]))
    counts = np.diff(np.append(starts, len(u)))
    rank = np.arange(len(u)) - np.repeat(starts, counts)  # 0 = the user's oldest rating
    held_sorted = rank >= np.repeat(counts - holdout_sizes(counts, fraction, min_ratings), counts)
    mask = np.empty(len(u), dtype=bool)
    mask[order] = held_sorted
    return mask


def expected_holdout_size(n: int, fraction: float = HOLDOUT_FRACTION,
                          min_ratings: int = MIN_HOLDOUT_RATINGS) -> int:  # fmt: skip
    """How many of a user's ``n`` ratings are held out (for tests and reports)."""
    return int(holdout_sizes(np.array([n]), fraction, min_ratings)[0])
