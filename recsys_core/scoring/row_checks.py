"""The gate's row-level contracts, checked over a stream of record batches in bounded memory.

The staged partition is read twice, a row group at a time, never whole:

1. ``user_id`` only: how many rows each snapshot user has (``np.bincount`` per batch).
2. Every column: the per-row contracts (unknown ids, a film the user rated, a non-finite
   score) on each batch, and the per-user ones (ranks ``1..n``, no duplicate film, scores
   non-increasing with rank) on each user once *all* of that user's rows have arrived:
   rows wait in a pending buffer until the user's count from pass 1 is reached, then the
   complete users of the buffer are sorted by (user_id, rank) and checked together.

Neither scorer promises where a user's rows lie (one zstd file with a row group per batch
of users from ``score.py``; part files by user range from ``spark_scoring.py``; a user may
straddle two row groups), and nothing here assumes it: any layout gives the result a sort
of the whole partition would. Memory is the pending buffer, which for both scorers'
layouts holds at most the rows of the users straddling the current batch boundary (rows
of users outside the snapshot wait to the end: they are an error already).

Counts and examples are those of the former whole-table check: the examples are the
smallest offenders in (user_id, rank) order (or by value, or by (user row, film) key).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_core.data.csr import gather_entries
from recsys_core.errors import InputError

EXAMPLES = 5
# IdIndex's lookup table when the ids' range is at most this many slots a id, plus this many
DENSE_IDS_PER_ID, DENSE_IDS_EXTRA = 16, 1 << 20
# One failure: (count, what, examples); ``Report.fail`` turns it into a line of the report.
Failure = tuple[int, str, list]


class IdIndex:
    """Positions of ids in a vocabulary ((n,) ``ids``, any order): -1 for an unknown id.

    MovieLens ids are dense enough (283K users up to id 283,228; 58K films up to ~209K) for
    a lookup table over their range, one gather per value (a binary search costs ~10x
    more per row, the bulk of the gate's time); sparse ids fall back to the search.
    """

    def __init__(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        self.n = len(ids)
        self.lo = int(ids.min()) if self.n else 0
        span = int(ids.max()) - self.lo + 1 if self.n else 0
        self.table: np.ndarray | None = None
        if span <= DENSE_IDS_PER_ID * self.n + DENSE_IDS_EXTRA:
            self.table = np.full(span, -1, dtype=np.int64)
            # written last to first: a repeated id keeps its first row
            self.table[ids[::-1] - self.lo] = np.arange(self.n)[::-1]
        else:
            self.order = np.argsort(ids, kind="stable")
            self.sorted = ids[self.order]

    def find(self, values: np.ndarray) -> np.ndarray:
        """(len(values),) int64 position of each value in ``ids``, -1 where it is absent."""
        if not self.n:
            return np.full(len(values), -1, dtype=np.int64)
        if self.table is not None:
            offset = values - self.lo
            inside = (offset >= 0) & (offset < len(self.table))
            return np.where(inside, self.table[np.where(inside, offset, 0)], -1)
        at = np.minimum(np.searchsorted(self.sorted, values), self.n - 1)
        return np.where(self.sorted[at] == values, self.order[at], -1)


class SmallestValues:
    """The ``EXAMPLES`` smallest distinct values offered so far (ascending)."""

    def __init__(self) -> None:
        self.values = np.zeros(0, dtype=np.int64)

    def offer(self, values: np.ndarray) -> None:
        if len(values):
            smallest = np.unique(values)[:EXAMPLES]
            self.values = np.unique(np.concatenate([self.values, smallest]))[:EXAMPLES]

    def list(self) -> list:
        return self.values.tolist()


@dataclass
class SmallestRows:
    """The ``EXAMPLES`` smallest offending rows by a sort key (a tuple), rendered as text."""

    render: Callable[..., str]
    items: list[tuple] = field(default_factory=list)

    def offer(self, *columns: np.ndarray) -> None:
        """``columns``: equal-length arrays, the leading ones the sort key, all passed to ``render``."""
        if len(columns[0]):
            first = np.lexsort(columns[::-1])[:EXAMPLES]
            rows = zip(*(c[first].tolist() for c in columns), strict=True)
            self.items = heapq.nsmallest(EXAMPLES, [*self.items, *rows])

    def list(self) -> list[str]:
        return [self.render(*item) for item in self.items]


def _numbers(batch: pa.RecordBatch, name: str, fill: float) -> np.ndarray:
    """A numeric column as numpy; a null becomes ``fill`` (an id or rank no row may have)."""
    column = batch.column(name)
    if column.null_count:
        column = pc.fill_null(column, fill)
    return column.to_numpy(zero_copy_only=False)


@dataclass
class Chunk:
    """Rows of some users: (n,) arrays, ``row`` the user's snapshot row (-1: not a snapshot user)."""

    user: np.ndarray
    row: np.ndarray
    rank: np.ndarray
    movie: np.ndarray
    score: np.ndarray

    @classmethod
    def empty(cls) -> Chunk:
        ints = (np.zeros(0, np.int64) for _ in range(4))
        return cls(*ints, np.zeros(0, np.float32))

    def __len__(self) -> int:
        return len(self.user)

    def slice(self, start: int, stop: int) -> Chunk:
        return self.take(slice(start, stop))

    def take(self, which: np.ndarray | slice) -> Chunk:
        return Chunk(self.user[which], self.row[which], self.rank[which], self.movie[which],
                     self.score[which])  # fmt: skip

    @staticmethod
    def concat(chunks: list[Chunk]) -> Chunk:
        return Chunk(*(np.concatenate([getattr(c, name) for c in chunks])
                       for name in ("user", "row", "rank", "movie", "score")))  # fmt: skip


class RowChecks:
    """Accumulates the row contracts of one staged partition over its batches.

    ``user_ids`` (n_users,) and the CSR ``indptr`` (n_users + 1,) / ``indices`` (nnz,) of the
    films each snapshot user rated, ``movie_ids`` (n_films,) the film vocabulary, ``top_n``
    the list length the scorer was asked for. Call ``count`` on every batch of ``user_id``,
    then ``check`` on every batch of the six columns (the same rows), then ``failures``.
    """

    def __init__(self, user_ids: np.ndarray, indptr: np.ndarray, indices: np.ndarray, movie_ids: np.ndarray,
                 top_n: int) -> None:  # fmt: skip
        self.user_ids = np.asarray(user_ids, np.int64)
        self.movie_ids = np.asarray(movie_ids, np.int64)
        self.indptr, self.indices, self.top_n = indptr, indices, top_n
        self.users, self.films = IdIndex(self.user_ids), IdIndex(self.movie_ids)
        self.n_users, self.n_films = len(self.user_ids), len(self.movie_ids)
        self.got = np.zeros(self.n_users, dtype=np.int64)  # rows per snapshot user (pass 1)
        self.arrived = np.zeros(self.n_users, dtype=np.int64)  # rows seen so far in pass 2
        self.rows = self.checked_rows = 0
        self.pending = Chunk.empty()  # rows of users some of whose rows are still to come
        self.strangers = [Chunk.empty()]  # rows of users outside the snapshot (checked last)
        self.counts = dict.fromkeys(("unknown_user", "unknown_movie", "rank", "seen_film", "duplicate",
                                     "non_finite_score", "score_order"), 0)  # fmt: skip
        self.unknown_users, self.unknown_movies = SmallestValues(), SmallestValues()
        self.non_finite_users, self.rising_users = SmallestValues(), SmallestValues()
        # examples keyed (user, rank, position in the sorted chunk[, movie])
        self.bad_ranks = SmallestRows(lambda u, r, _: f"user {u} rank {r}")
        self.seen = SmallestRows(lambda u, r, _, m: f"user {u} movie {m}")
        self.duplicates = SmallestRows(lambda k: f"user {self.user_ids[k // self.n_films]} "
                                                 f"movie {self.movie_ids[k % self.n_films]}")  # fmt: skip

    # ---------------------------------------------------------------- pass 1

    def count(self, batch: pa.RecordBatch) -> None:
        """Pass 1: rows per snapshot user, and the rows of users outside the snapshot."""
        user = _numbers(batch, "user_id", 0).astype(np.int64)
        row = self.users.find(user)
        known = row >= 0
        self.got += np.bincount(row[known], minlength=self.n_users)
        self.counts["unknown_user"] += int(len(user) - known.sum())
        self.unknown_users.offer(user[~known])
        self.rows += len(user)

    # ---------------------------------------------------------------- pass 2

    def check(self, batch: pa.RecordBatch) -> None:
        """Pass 2: per-row contracts now; per-user ones on every user whose rows are all in."""
        user = _numbers(batch, "user_id", 0).astype(np.int64)
        chunk = Chunk(user, self.users.find(user), _numbers(batch, "rank", 0).astype(np.int64),
                      _numbers(batch, "movie_id", 0).astype(np.int64),
                      _numbers(batch, "score", np.nan).astype(np.float32, copy=False))  # fmt: skip
        self.checked_rows += len(chunk)
        known = chunk.row >= 0
        mine = chunk
        if not known.all():
            self.strangers.append(chunk.take(~known))
            mine = chunk.take(known)
        np.add.at(self.arrived, mine.row, 1)
        if np.any(self.arrived[mine.row] > self.got[mine.row]):
            raise InputError("the staged partition changed while the gate read it (more rows than a moment "
                             "before): re-run the check job")  # fmt: skip
        waiting = Chunk.concat([self.pending, mine]) if len(self.pending) else mine
        waits = np.flatnonzero(self.arrived[waiting.row] != self.got[waiting.row])
        if len(waits) == 0:
            done, self.pending = waiting, Chunk.empty()
        elif waits[0] == len(waiting) - len(waits):  # the usual case: the batch's last user goes on
            done, self.pending = waiting.slice(0, waits[0]), waiting.slice(waits[0], len(waiting))
        else:
            complete = np.ones(len(waiting), dtype=bool)
            complete[waits] = False
            done, self.pending = waiting.take(complete), waiting.take(waits)
        self._check_users(done)

    def _check_users(self, chunk: Chunk) -> None:
        """Every contract on ``chunk``, which holds all the rows of each user in it."""
        if not len(chunk):
            return
        user, rank = chunk.user, chunk.rank
        if not np.all((user[1:] > user[:-1]) | ((user[1:] == user[:-1]) & (rank[1:] >= rank[:-1]))):
            chunk = chunk.take(
                np.lexsort((rank, user))
            )  # stable: equal keys keep the stream's order
        user, row, rank, movie, score = chunk.user, chunk.row, chunk.rank, chunk.movie, chunk.score
        n = len(user)
        position = np.arange(n)
        start = np.r_[True, user[1:] != user[:-1]]
        group_start = np.maximum.accumulate(np.where(start, position, 0))
        bad_rank = rank != position - group_start + 1
        self.counts["rank"] += int(bad_rank.sum())
        self.bad_ranks.offer(user[bad_rank], rank[bad_rank], position[bad_rank])

        film = self.films.find(movie)
        unknown_film = film < 0
        self.counts["unknown_movie"] += int(unknown_film.sum())
        self.unknown_movies.offer(movie[unknown_film])
        ok = (row >= 0) & ~unknown_film
        key = row * self.n_films + film
        ordered = np.sort(key[ok])
        rated = self._rated(np.unique(row[ok]))
        # one search of sorted keys in sorted keys (numpy starts each search where the last
        # one ended: ~5x faster than unsorted); which rows only when there are some
        at = np.minimum(np.searchsorted(rated, ordered), max(len(rated) - 1, 0))
        seen_count = int(np.count_nonzero(rated[at] == ordered)) if len(rated) else 0
        if seen_count:
            seen = ok & np.isin(key, rated)
            self.counts["seen_film"] += seen_count
            self.seen.offer(user[seen], rank[seen], position[seen], movie[seen])
        dup = ordered[1:] == ordered[:-1]
        self.counts["duplicate"] += int(dup.sum())
        self.duplicates.offer(ordered[1:][dup])

        finite = np.isfinite(score)
        self.counts["non_finite_score"] += int(n - finite.sum())
        self.non_finite_users.offer(user[~finite])
        rising = ~start[1:] & (score[1:] > score[:-1])
        self.counts["score_order"] += int(rising.sum())
        self.rising_users.offer(user[1:][rising])

    def _rated(self, rows: np.ndarray) -> np.ndarray:
        """The sorted (row * n_films + film) keys of the films the snapshot ``rows`` rated."""
        positions, counts = gather_entries(self.indptr, rows)
        return np.sort(np.repeat(rows, counts) * self.n_films + self.indices[positions])

    # ---------------------------------------------------------------- result

    def failures(self) -> dict[str, Failure]:
        """The broken contracts, in the report's order; call after both passes."""
        if len(self.pending) or self.checked_rows != self.rows:
            raise InputError(f"the staged partition changed while the gate read it ({self.rows} rows, then "
                             f"{self.checked_rows}): re-run the check job")  # fmt: skip
        self._check_users(Chunk.concat(self.strangers))
        self.strangers = []
        out: dict[str, Failure] = {}
        c = self.counts
        if c["unknown_user"]:
            out["unknown_user"] = (c["unknown_user"], "rows for users not in the snapshot",
                                   self.unknown_users.list())  # fmt: skip
        if c["unknown_movie"]:
            out["unknown_movie"] = (c["unknown_movie"], "rows with a movie_id outside the vocabulary",
                                    self.unknown_movies.list())  # fmt: skip
        expected = np.minimum(self.top_n, self.n_films - np.diff(self.indptr))
        missing = np.flatnonzero((self.got == 0) & (expected > 0))
        if len(missing):
            out["missing_user"] = (len(missing), "snapshot users without recommendations",
                                   self.user_ids[missing[:EXAMPLES]].tolist())  # fmt: skip
        wrong = np.flatnonzero((self.got != expected) & (self.got > 0))
        if len(wrong):
            out["row_count"] = (len(wrong), "users without min(N, unseen films) rows",
                                [f"user {self.user_ids[u]}: {self.got[u]} rows, expected {expected[u]}"
                                 for u in wrong[:EXAMPLES]])  # fmt: skip
        named: Iterable[tuple[str, str, list]] = (
            ("rank", "rows whose rank is not contiguous from 1", self.bad_ranks.list()),
            ("seen_film", "rows recommend a film the user rated", self.seen.list()),
            ("duplicate", "duplicate (user, film) rows", self.duplicates.list()),
            ("non_finite_score", "rows with a NaN or infinite score", self.non_finite_users.list()),
            ("score_order", "rows score higher than the rank before them", self.rising_users.list()),
        )  # fmt: skip
        out.update({name: (c[name], what, examples) for name, what, examples in named if c[name]})
        return out

    def figures(self) -> dict:
        return {"rows": self.rows, "users": int((self.got > 0).sum())}
