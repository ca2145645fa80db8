"""Score every snapshot user and write the staging partition of ``recommendations``.

For each batch of users (on GPU or CPU): user embedding -> scores over the film
vocabulary (the AE's logits plus the model's own terms) -> every film the user rated
masked out -> top-N, score descending, ties by movieId. The published score is the
reference score of ``recsys_core.scoring.reference`` (one fp32 computation in a fixed
order: the same bits on any device and in any batch); by default only a few candidates per
user get it, picked by a fast BLAS product and proved to hold the reference top-N
(``recsys_core.scoring.candidates``); ``ScoreConfig.exact`` ranks every film by it instead
(``reference.exact_top_n``: the same rows, slower).
Users with fewer than ``min_user_films`` vocabulary ratings cannot be encoded usefully;
they get the most popular unseen films, marked ``source = 'popularity'``.

The partition is written to a hidden sibling and swapped in at
``Warehouse.recommendations_staging(ds)``, with ``_scoring.json`` (top_n, model_version,
counts) beside the Parquet files; ``jobs/check.py`` reads it from there and
``jobs/publish.py`` publishes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch
from threadpoolctl import threadpool_limits

from recsys_core import defaults, fs_swap
from recsys_core.data.csr import RatingsCSR
from recsys_core.data.features import load_features
from recsys_core.device import autocast, select_device, torch_threads
from recsys_core.errors import ConfigError
from recsys_core.model_version import model_version
from recsys_core.models.user_ae import UserAE, UserBatch, encode_users, user_batch
from recsys_core.paths import Warehouse
from recsys_core.progress import Progress
from recsys_core.publish.contract import SCHEMA
from recsys_core.ranking.top_n import top_n_unseen
from recsys_core.reproducible import warm_up_cpu_math
from recsys_core.scoring.candidates import FilmTables, certified_top_n
from recsys_core.scoring.reference import exact_top_n
from recsys_core.training import artifacts

log = logging.getLogger(__name__)
SCORING_META = "_scoring.json"
PROGRESS_SECONDS = 30.0
# Users scored at once on the CPU: their (users, films) float32 matrices (the scores and two
# of the model's terms, 15 MB each at 58,098 films) stay near the L3 cache (32 MB here)
# through the passes that follow the product; on CUDA a whole batch at once.
CPU_CHUNK_USERS = 64
CANDIDATE_MARGIN = 16  # candidates per user beyond top_n: a tie across the cut costs a fallback
# Columns with few distinct values per row group; a score dictionary only fills up and falls
# back (measured on a 2,048-user batch: write 32 -> 11 ms, 1.34 -> 0.93 MB, read 14 -> 9 ms)
DICTIONARY_COLUMNS = ["user_id", "movie_id", "source", "model_version"]


@dataclass
class ScoreConfig:
    top_n: int = defaults.TOP_N
    device: str = defaults.DEVICE
    batch_size: int = defaults.SCORE_BATCH_USERS
    min_user_films: int = defaults.MIN_USER_FILMS  # fewer vocabulary ratings than this: popularity fallback
    exact: bool = False  # rank every film by the reference score (tests, debugging): same rows, slower

    def validate(self) -> None:
        for name in ("top_n", "batch_size", "min_user_films"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.top_n > 32767:
            raise ConfigError(f"--top-n must be <= 32767 (rank is a smallint), got {self.top_n}")


def rows_table(user_ids: np.ndarray, films: np.ndarray, scores: np.ndarray, count: np.ndarray,
               movie_ids: np.ndarray, source: str, version: str) -> pa.Table:
    """Recommendation rows of some users: the first ``count[b]`` entries of row ``b``."""
    valid = np.arange(films.shape[1])[None, :] < count[:, None]
    n = int(valid.sum())
    return pa.table({
        "user_id": pa.array(np.repeat(user_ids, count).astype(np.int32)),
        "rank": pa.array(np.nonzero(valid)[1].astype(np.int16) + 1),
        "movie_id": pa.array(movie_ids[films[valid]].astype(np.int32)),
        "score": pa.array(scores[valid].astype(np.float32)),
        "source": pa.repeat(pa.scalar(source, pa.string()), n),  # not a list of n strings: 30x faster
        "model_version": pa.repeat(pa.scalar(version, pa.string()), n),
    }, schema=SCHEMA)  # fmt: skip


def popular_rows_table(csr: RatingsCSR, rows: np.ndarray, user_ids: np.ndarray, film_counts: np.ndarray,
                       movie_ids: np.ndarray, version: str, top_n: int) -> pa.Table:  # fmt: skip
    """The popularity fallback's rows for the users ``rows`` of ``csr`` (one batch).

    ``user_ids`` is aligned with ``csr``'s rows; ``film_counts`` (n_films,) are the ratings
    per film over all users (the score), ranked through the same top-N (ties by movieId)
    as the model's lists.
    """
    seen = csr.select_rows(rows)
    scores = torch.from_numpy(np.repeat(film_counts.astype(np.float32)[None, :], len(rows), axis=0))
    films, values, count = top_n_unseen(scores, torch.from_numpy(seen.entry_rows()),
                                        torch.from_numpy(seen.indices), top_n)  # fmt: skip
    return rows_table(user_ids[rows], films, values, count, movie_ids, "popularity", version)


class BatchScorer:
    """A batch of users -> their recommendation rows: the one step of both scorers.

    The local scorer (``run_scoring``) and the Spark scorer's executors
    (``recsys_core.scoring.spark_scoring``) call ``model_rows`` / ``popular_rows`` on
    batches of users, so both produce the same rows for a user. ``user_ids`` passed to
    them is aligned with the rows of ``csr`` (``user_ids[r]`` is row ``r``'s userId).
    ``uncertified_users`` counts the users the fast path could not certify (ranked exactly).

    A batch is scored in chunks (``CPU_CHUNK_USERS`` on the CPU, the whole batch on CUDA).
    Given two torch threads or more where it is built, a second thread builds the next
    chunk's inputs (the model's batch, embedding and terms) while the caller's ranks the
    current chunk, each with half the torch threads: the two halves cost about the same, and
    on chunks this small torch's own threads mostly wait on each other (measured with the
    machine loaded: 12.4 s per 2,048 users with 2 intra-op threads, 2.7 s with this split).
    """

    def __init__(self, model: UserAE, movie_ids: np.ndarray, film_counts: np.ndarray, version: str, top_n: int,
                 device: torch.device, bf16: bool = False, exact: bool = False) -> None:  # fmt: skip
        """``movie_ids`` (n_films,) maps film_idx to movieId; ``film_counts`` (n_films,) are the
        ratings per film over every user (the popularity fallback's score); ``exact`` ranks
        every film by the reference score instead of certified candidates."""
        self.model, self.movie_ids, self.film_counts = model, movie_ids, film_counts
        self.version, self.top_n, self.device, self.bf16, self.exact = version, top_n, device, bf16, exact
        with torch.no_grad():
            self.films = FilmTables(model.film_vectors(), model.film_bias)  # once, not per batch
        self.uncertified_users = 0
        self._buffers: dict[str, torch.Tensor] = {}
        budget = torch.get_num_threads()  # what the caller gives this scorer
        self._threads = max(1, budget // 2)
        # torch's thread count is per OS thread: the helper sets its own
        self._ahead = ThreadPoolExecutor(1, "score-inputs", torch.set_num_threads, (self._threads,)) if budget > 1 else None

    def _buffer(self, name: str, rows: int, width: int) -> torch.Tensor:
        """A (rows, width) float32 matrix kept from chunk to chunk (not zeroed): a fresh one of
        this size costs page faults on every chunk."""
        held = self._buffers.get(name)
        if held is None or held.shape[0] < rows or held.shape[1] != width:
            held = self._buffers[name] = torch.empty((rows, width), device=self.device)
        return held[:rows]

    def inputs(self, csr: RatingsCSR, rows: np.ndarray, slot: int) -> tuple[UserBatch, torch.Tensor, torch.Tensor]:
        """(batch, embeddings (B, D) float32, the model's terms (B, n_films) float32) of the users
        ``rows`` ((B,) int64 rows of ``csr``), all from the model's own methods; the terms are
        computed alone on a zero matrix (``reference.py``), in buffer ``slot`` (0 or 1)."""
        model = self.model
        with torch.no_grad():
            batch = user_batch(csr, rows, liked_rating=model.config.liked_rating).to(self.device)
            with autocast(self.device, self.bf16):
                user = model.encode(batch)
            term = model.add_item_scores(self._buffer(f"term{slot}", len(rows), self.films.n_films).zero_(), batch)
        return batch, user.float().contiguous(), term

    def _start(self, csr: RatingsCSR, rows: np.ndarray, slot: int) -> Future:
        """``inputs`` on the helper thread, or here and now without one."""
        if self._ahead is not None:
            return self._ahead.submit(self.inputs, csr, rows, slot)
        done: Future = Future()
        done.set_result(self.inputs(csr, rows, slot))
        return done

    def top_n_of(self, batch: UserBatch, user: torch.Tensor, term: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
        """(film_idx (B, k), scores (B, k), count (B,)) of the users of ``batch`` (``inputs``):
        ``top_n_unseen`` of their reference scores, k = min(top_n, n_films)."""
        films = self.films
        with torch.no_grad():
            if self.exact:
                return exact_top_n(user, films.vectors, films.bias, term, batch.rows, batch.indices, self.top_n)
            approx = self._buffer("approx", len(user), films.n_padded)
            top, values, count, redone = certified_top_n(films, user, term, batch.rows, batch.indices, self.top_n,
                                                         CANDIDATE_MARGIN, approx)  # fmt: skip
        self.uncertified_users += redone
        return top, values, count

    def model_rows(self, csr: RatingsCSR, rows: np.ndarray, user_ids: np.ndarray) -> pa.Table:
        """Rows of the users ``rows`` ((B,) int64 rows of ``csr``) scored by the model:
        user embedding -> scores over the films (+ the model's terms) -> seen masked -> top-N."""
        chunk = CPU_CHUNK_USERS if self.device.type == "cpu" else max(len(rows), 1)
        parts = []
        # the caller's share of the threads, for torch and for numpy's BLAS product: with a
        # helper thread building the next chunk, OpenBLAS's own workers spin on the helper's
        # core between products (measured loaded: 1.8 s per 2,048 users on two OpenBLAS
        # threads against 1.06 s on one)
        blas = threadpool_limits(limits=self._threads, user_api="blas") if self._ahead else nullcontext()
        with torch_threads(self._threads), blas:
            pending = self._start(csr, rows[:chunk], 0)
            for i, lo in enumerate(range(0, len(rows), chunk)):
                current = pending.result()  # re-raises what the helper raised
                if lo + chunk < len(rows):
                    pending = self._start(csr, rows[lo + chunk : lo + 2 * chunk], (i + 1) % 2)
                parts.append(self.top_n_of(*current))
        if not parts:
            empty = np.zeros((0, min(self.top_n, self.films.n_films)))
            parts.append((empty.astype(np.int64), empty.astype(np.float32), np.zeros(0, np.int64)))
        films, values, count = (np.concatenate(part) for part in zip(*parts))
        return rows_table(user_ids[rows], films, values, count, self.movie_ids, "model", self.version)

    def popular_rows(self, csr: RatingsCSR, rows: np.ndarray, user_ids: np.ndarray) -> pa.Table:
        """Rows of the users ``rows`` of ``csr`` from the popularity fallback."""
        return popular_rows_table(csr, rows, user_ids, self.film_counts, self.movie_ids, self.version, self.top_n)


def rows_writer(path: str, filesystem: pafs.FileSystem | None = None) -> pq.ParquetWriter:
    """A zstd Parquet writer of recommendation rows (``SCHEMA``) at ``path`` (of ``filesystem``)."""
    return pq.ParquetWriter(path, SCHEMA, filesystem=filesystem, compression="zstd",
                            use_dictionary=DICTIONARY_COLUMNS)  # fmt: skip


def write_in_batches(writer: pq.ParquetWriter, rows: np.ndarray, batch_size: int,
                     rows_of: Callable[[np.ndarray], pa.Table], progress: Progress | None = None) -> int:
    """Write ``rows_of(batch)`` for the users ``rows``, ``batch_size`` at a time; returns the row count."""
    written = 0
    for lo in range(0, len(rows), batch_size):
        part = rows[lo : lo + batch_size]
        table = rows_of(part)
        writer.write_table(table)
        written += table.num_rows
        if progress is not None:
            progress.add(len(part))
    return written


def score_popular_users(writer: pq.ParquetWriter, csr: RatingsCSR, rows: np.ndarray, user_ids: np.ndarray,
                        movie_ids: np.ndarray, version: str, top_n: int, batch_size: int) -> int:  # fmt: skip
    """The fallback for users the model cannot encode: the most rated unseen films, score =
    number of ratings, through the same top-N (ties by movieId) as the model's lists."""
    counts = csr.film_counts()
    return write_in_batches(writer, rows, batch_size,
                            lambda part: popular_rows_table(csr, part, user_ids, counts, movie_ids, version, top_n))


def run_scoring(warehouse: Warehouse, ds: str, config: ScoreConfig | None = None) -> dict:
    """Score every user of ``features/ds=…`` with ``models/ds=…``; returns the summary."""
    config = config or ScoreConfig()
    config.validate()
    warm_up_cpu_math()  # same bits on every run of the same model (see recsys_core.reproducible)
    started = time.monotonic()
    device, bf16 = select_device(config.device)
    features = load_features(warehouse.features(ds))
    models = artifacts.load_models(warehouse.models(ds), features.manifest, device)
    version = model_version(warehouse.models(ds), ds)
    csr, user_ids, movie_ids = features.users.csr, features.users.user_ids, features.films.movie_ids
    model_rows = np.flatnonzero(csr.counts >= config.min_user_films)
    popular_rows = np.flatnonzero(csr.counts < config.min_user_films)
    log.info("scoring ds=%s: %d users (%d by popularity), %d films, top %d, model %s, device %s",
             ds, csr.n_users, len(popular_rows), csr.n_films, config.top_n, version, device)  # fmt: skip
    scorer = BatchScorer(models.user, movie_ids, csr.film_counts(), version, config.top_n, device, bf16, config.exact)
    progress = Progress("scored", total=len(model_rows), unit="users", every_s=PROGRESS_SECONDS, logger=log)
    summary: dict = {}

    def write(staging: str) -> None:
        fs, inner = fs_swap.filesystem(staging)
        with rows_writer(f"{inner}/part-00000.parquet", fs) as writer:
            n_model = write_in_batches(writer, model_rows, config.batch_size,
                                       lambda part: scorer.model_rows(csr, part, user_ids), progress)
            n_popular = write_in_batches(writer, popular_rows, config.batch_size,
                                         lambda part: scorer.popular_rows(csr, part, user_ids))
        summary.update({
            "ds": ds, "top_n": config.top_n, "model_version": version, "device": str(device), "engine": "local",
            "users": int(csr.n_users), "model_users": len(model_rows), "popularity_users": len(popular_rows),
            "rows": n_model + n_popular, "films": int(csr.n_films),
            "seconds": round(time.monotonic() - started, 3),
            "exact": config.exact, "uncertified_users": scorer.uncertified_users,
        })  # fmt: skip
        fs_swap.write_json(f"{staging}/{SCORING_META}", summary)

    fs_swap.publish_dir(warehouse.recommendations_staging(ds), write)
    if artifacts.embeddings_model_version(warehouse.embeddings(ds)) != version:
        # missing, or from another model (a train killed between its models and embeddings)
        log.info("writing embeddings/ds=%s of model %s", ds, version)
        artifacts.write_embeddings(
            warehouse.embeddings(ds), user_ids, encode_users(models.user, csr, device), movie_ids,
            models.user.film_vectors().detach().float().cpu().numpy(), models.user.film_bias.detach().cpu().numpy(),
            version,
        )  # fmt: skip
    how = ("every film ranked by the reference score (--exact)" if config.exact else
           f"{summary['uncertified_users']} not certified by the fast path: ranked exactly")  # fmt: skip
    log.info("scored %d users into %d rows in %.1fs (%s)", summary["users"], summary["rows"], summary["seconds"], how)
    return summary
