"""Score every snapshot user and write the staging partition of ``recommendations``.

For each batch of users (on GPU or CPU): user embedding -> scores over the film
vocabulary -> every film the user rated masked out -> top-N
(``recsys_core.ranking.top_n.top_n_unseen``, the same top-N as validation and evaluation).
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
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from recsys_core import defaults, fs_swap
from recsys_core.data.csr import RatingsCSR
from recsys_core.data.features import load_features
from recsys_core.device import autocast, select_device
from recsys_core.errors import ConfigError
from recsys_core.model_version import model_version
from recsys_core.models.user_ae import UserAE, encode_users, user_batch
from recsys_core.paths import Warehouse
from recsys_core.progress import Progress
from recsys_core.publish.contract import SCHEMA
from recsys_core.ranking.top_n import top_n_unseen
from recsys_core.reproducible import warm_up_cpu_math
from recsys_core.training import artifacts

log = logging.getLogger(__name__)
SCORING_META = "_scoring.json"
PROGRESS_SECONDS = 30.0


@dataclass
class ScoreConfig:
    top_n: int = defaults.TOP_N
    device: str = defaults.DEVICE
    batch_size: int = defaults.SCORE_BATCH_USERS
    min_user_films: int = defaults.MIN_USER_FILMS  # fewer vocabulary ratings than this: popularity fallback

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
        "source": pa.array([source] * n, pa.string()) if n else pa.array([], pa.string()),
        "model_version": pa.array([version] * n, pa.string()) if n else pa.array([], pa.string()),
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
    """

    def __init__(self, model: UserAE, movie_ids: np.ndarray, film_counts: np.ndarray, version: str, top_n: int,
                 device: torch.device, bf16: bool = False) -> None:  # fmt: skip
        """``movie_ids`` (n_films,) maps film_idx to movieId; ``film_counts`` (n_films,) are the
        ratings per film over every user (the popularity fallback's score)."""
        self.model, self.movie_ids, self.film_counts = model, movie_ids, film_counts
        self.version, self.top_n, self.device, self.bf16 = version, top_n, device, bf16
        with torch.no_grad():
            self.vectors, self.bias = model.film_vectors(), model.film_bias  # once, not per batch

    def model_rows(self, csr: RatingsCSR, rows: np.ndarray, user_ids: np.ndarray) -> pa.Table:
        """Rows of the users ``rows`` ((B,) int64 rows of ``csr``) scored by the model:
        user embedding -> scores over the films (+ item-item term) -> seen masked -> top-N."""
        model = self.model
        with torch.no_grad():
            batch = user_batch(csr, rows, liked_rating=model.config.liked_rating).to(self.device)
            with autocast(self.device, self.bf16):
                scores = model.add_item_scores(model.encode(batch) @ self.vectors.T + self.bias, batch)
            films, values, count = top_n_unseen(scores.float(), batch.rows, batch.indices, self.top_n)
        return rows_table(user_ids[rows], films, values, count, self.movie_ids, "model", self.version)

    def popular_rows(self, csr: RatingsCSR, rows: np.ndarray, user_ids: np.ndarray) -> pa.Table:
        """Rows of the users ``rows`` of ``csr`` from the popularity fallback."""
        return popular_rows_table(csr, rows, user_ids, self.film_counts, self.movie_ids, self.version, self.top_n)


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
    scorer = BatchScorer(models.user, movie_ids, csr.film_counts(), version, config.top_n, device, bf16)
    progress = Progress("scored", total=len(model_rows), unit="users", every_s=PROGRESS_SECONDS, logger=log)
    summary: dict = {}

    def write(staging: str) -> None:
        fs, inner = fs_swap.filesystem(staging)
        with pq.ParquetWriter(f"{inner}/part-00000.parquet", SCHEMA, filesystem=fs, compression="zstd") as writer:
            n_model = write_in_batches(writer, model_rows, config.batch_size,
                                       lambda part: scorer.model_rows(csr, part, user_ids), progress)
            n_popular = write_in_batches(writer, popular_rows, config.batch_size,
                                         lambda part: scorer.popular_rows(csr, part, user_ids))
        summary.update({
            "ds": ds, "top_n": config.top_n, "model_version": version, "device": str(device), "engine": "local",
            "users": int(csr.n_users), "model_users": len(model_rows), "popularity_users": len(popular_rows),
            "rows": n_model + n_popular, "films": int(csr.n_films),
            "seconds": round(time.monotonic() - started, 3),
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
    log.info("scored %d users into %d rows in %.1fs", summary["users"], summary["rows"], summary["seconds"])
    return summary
