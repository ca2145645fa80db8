"""The one sparse users x films matrix of the project: ``RatingsCSR`` (compressed sparse rows).

Training, scoring, the quality gate, the evaluation baselines and the metrics all hold
ratings (or sets of films, such as each user's relevant films) in this type. Row ``u`` is
the entries ``indptr[u]:indptr[u + 1]`` of ``indices`` (film_idx), ``ratings`` and
``timestamps``; a set of films without ratings carries ratings of 1 and timestamps of 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

# Ratings from 4 stars up are "liked": the user AE's loss targets, the item-item term's
# input, and the relevant films of a held-out tail (validation and offline evaluation).
LIKED_RATING = 4.0


def gather_entries(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flat entry positions of ``rows`` in order, (len(rows),) entries per row), vectorized."""
    starts, counts = indptr[rows], indptr[rows + 1] - indptr[rows]
    total = int(counts.sum())
    row_first = np.cumsum(counts) - counts
    positions = np.arange(total, dtype=np.int64) - np.repeat(row_first - starts, counts)
    return positions, counts


def indptr_from_counts(counts: np.ndarray) -> np.ndarray:
    """(len(counts) + 1,) int64 row pointers of rows with ``counts`` entries each."""
    indptr = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr


@dataclass
class RatingsCSR:
    """Users x films ratings as CSR: row ``u`` is ``indices[indptr[u]:indptr[u+1]]``."""

    indptr: np.ndarray  # (n_users + 1,) int64
    indices: np.ndarray  # (nnz,) int64 film_idx
    ratings: np.ndarray  # (nnz,) float32 stars (0.5..5.0); 1 in a plain set of films
    timestamps: np.ndarray  # (nnz,) int64 seconds since the epoch (UTC); 0 in a plain set
    n_films: int
    _liked: dict = field(default_factory=dict, repr=False, compare=False)  # liked() by threshold

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    @property
    def counts(self) -> np.ndarray:
        """(n_users,) entries per user."""
        return np.diff(self.indptr)

    def entry_rows(self, dtype: type = np.int64) -> np.ndarray:
        """(nnz,) the user row of every entry, as ``dtype`` (int32 halves it where users fit)."""
        return np.repeat(np.arange(self.n_users, dtype=dtype), self.counts)

    def film_counts(self) -> np.ndarray:
        """(n_films,) entries per film (its number of ratings)."""
        return np.bincount(self.indices, minlength=self.n_films)

    def select_entries(self, keep: np.ndarray) -> RatingsCSR:
        """The same users with only the entries where ``keep`` ((nnz,) bool) is true."""
        kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
        indptr = kept_before[self.indptr]
        return RatingsCSR(indptr, self.indices[keep], self.ratings[keep], self.timestamps[keep], self.n_films)

    def liked(self, liked_rating: float = LIKED_RATING) -> RatingsCSR:
        """The same users with only their ratings >= ``liked_rating`` (derived once, then kept)."""
        if liked_rating not in self._liked:
            self._liked[liked_rating] = self.select_entries(self.ratings >= liked_rating)
        return self._liked[liked_rating]

    def select_rows(self, rows: np.ndarray) -> RatingsCSR:
        """A CSR of the users ``rows`` (in that order), one row each."""
        positions, counts = gather_entries(self.indptr, np.asarray(rows, dtype=np.int64))
        return RatingsCSR(indptr_from_counts(counts), self.indices[positions], self.ratings[positions],
                          self.timestamps[positions], self.n_films)  # fmt: skip

    def dense(self, rows: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(len(rows), n_films) binary matrix of the asked users (1 = rated)."""
        part = self.select_rows(rows)
        out = torch.zeros((len(rows), self.n_films), dtype=dtype)
        out[torch.from_numpy(part.entry_rows()), torch.from_numpy(part.indices)] = 1
        return out

    def todense(self) -> np.ndarray:
        """(n_users, n_films) float32 ratings, 0 where unrated (tests and tiny cases only)."""
        dense = np.zeros((self.n_users, self.n_films), dtype=np.float32)
        dense[self.entry_rows(), self.indices] = self.ratings
        return dense

    @classmethod
    def from_entries(cls, rows: np.ndarray, films: np.ndarray, n_users: int, n_films: int,
                     ratings: np.ndarray | None = None, timestamps: np.ndarray | None = None) -> RatingsCSR:  # fmt: skip
        """From (row, film[, rating, timestamp]) entries in any order, sorted by (row, film).

        A duplicate (row, film) entry is kept once (the first given); ratings default to 1 and
        timestamps to 0 (a set of films). Raises ValueError for a row outside 0..n_users-1.
        """
        rows, films = np.asarray(rows, dtype=np.int64), np.asarray(films, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= n_users):
            raise ValueError(f"row index outside 0..{n_users - 1}")
        ratings = np.ones(len(rows), np.float32) if ratings is None else np.asarray(ratings, np.float32)
        timestamps = np.zeros(len(rows), np.int64) if timestamps is None else np.asarray(timestamps, np.int64)
        order = np.lexsort((np.arange(len(rows)), films, rows))
        rows, films, ratings, timestamps = rows[order], films[order], ratings[order], timestamps[order]
        if len(rows):
            first = np.concatenate([[True], (rows[1:] != rows[:-1]) | (films[1:] != films[:-1])])
            rows, films, ratings, timestamps = rows[first], films[first], ratings[first], timestamps[first]
        indptr = indptr_from_counts(np.bincount(rows, minlength=n_users))
        return cls(indptr, films, ratings, timestamps, n_films)

    @classmethod
    def from_lists(cls, lists: list[list[int]], n_films: int | None = None) -> RatingsCSR:
        """A set of films per row (tests and small cases)."""
        rows = np.repeat(np.arange(len(lists)), [len(x) for x in lists])
        films = np.array([i for x in lists for i in x], dtype=np.int64)
        width = n_films if n_films is not None else int(films.max(initial=-1)) + 1
        return cls.from_entries(rows, films, len(lists), width)
