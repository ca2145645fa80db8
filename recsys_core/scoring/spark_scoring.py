"""Score every user on Spark executors: the scale-out twin of ``recsys_core.scoring.score``.

Driver (no user row ever reaches it):

1. reads the features and model manifests through the JVM's Hadoop filesystem (paths may
   be ``hdfs://`` / ``s3a://`` URIs), checks the model's vocabularies against the features;
2. reads the user AE's weights once (the JVM copies the file to a local temp file) and
   derives ``model_version`` from exactly those bytes (the local scorer's formula);
3. counts the users (and those the model cannot encode), reads ``movie_id`` per
   ``film_idx`` (film-sized) and, only when some user gets the popularity fallback, counts
   ratings per film with one aggregation over the users (its score; film-sized result);
4. broadcasts one payload (model manifest, weight bytes, movie ids, film counts) and runs
   ``mapInArrow`` over the users parquet, which the features job partitioned by user.

Executors: each Python worker builds the model once per version (``_scorer``), sets torch's
threads to the cores the task holds (``spark.task.cpus``; raise it to the executor's cores
for one scoring task per executor using all of them), picks CUDA when the executor has it,
and turns each Arrow batch of users into a ``RatingsCSR`` scored through
``score.BatchScorer`` (the local scorer's per-batch step: the same rows per user).

The rows (``publish.contract.SCHEMA``) are written by Spark into a hidden sibling of
``Warehouse.recommendations_staging(ds)`` with ``_scoring.json`` beside them, then swapped
in (``recsys_core.spark.fs.swap_in``): what ``jobs/check.py`` and ``jobs/publish.py`` read
from ``jobs/score.py``, in several part files instead of one.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from pyspark import AccumulatorParam, TaskContext
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from recsys_core.data.csr import RatingsCSR, indptr_from_counts
from recsys_core.device import select_device
from recsys_core.errors import ConfigError, InputError
from recsys_core.model_version import version_string
from recsys_core.models.user_ae import UserAE, UserAEConfig
from recsys_core.paths import Warehouse, staging_path
from recsys_core.publish.contract import SCHEMA
from recsys_core.reproducible import warm_up_cpu_math
from recsys_core.scoring.score import SCORING_META, BatchScorer, ScoreConfig
from recsys_core.spark import fs
from recsys_core.training import artifacts

log = logging.getLogger(__name__)
USER_COLUMNS = ("user_id", "film_idx", "rating", "timestamp")  # timestamps: the term's recency


# ---------------------------------------------------------------- executor side


def users_csr(batch: pa.RecordBatch, n_films: int) -> tuple[RatingsCSR, np.ndarray]:
    """(CSR of the batch's users (B rows), (B,) int64 user ids) from a ``features/users`` batch.

    Null lists count as empty. Raises ValueError when the film and rating lists are not
    aligned or a film_idx lies outside ``0..n_films-1``.
    """
    films, ratings = batch.column("film_idx"), batch.column("rating")
    lengths = pc.fill_null(pc.list_value_length(films), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    rating_lengths = pc.fill_null(pc.list_value_length(ratings), 0).to_numpy(zero_copy_only=False)
    if not np.array_equal(lengths, rating_lengths):
        raise ValueError("features/users: film_idx and rating lists are not aligned")
    indices = pc.list_flatten(films).to_numpy(zero_copy_only=False).astype(np.int64)
    if len(indices) and (indices.min() < 0 or indices.max() >= n_films):
        raise ValueError(f"features/users: film_idx outside the film vocabulary of {n_films} films")
    csr = RatingsCSR(
        indptr=indptr_from_counts(lengths),
        indices=indices,
        ratings=pc.list_flatten(ratings).to_numpy(zero_copy_only=False).astype(np.float32),
        timestamps=pc.list_flatten(batch.column("timestamp")).to_numpy(zero_copy_only=False).astype(np.int64),
        n_films=n_films,
    )
    return csr, batch.column("user_id").to_numpy(zero_copy_only=False).astype(np.int64)


def score_users(scorer: BatchScorer, csr: RatingsCSR, user_ids: np.ndarray, batch_size: int,
                min_user_films: int) -> Iterator[pa.Table]:  # fmt: skip
    """Rows of every user of ``csr``, ``batch_size`` users at a time: the model's for users
    with at least ``min_user_films`` films, the popularity fallback's for the others."""
    encodable = csr.counts >= min_user_films
    for lo in range(0, csr.n_users, batch_size):
        part = np.arange(lo, min(lo + batch_size, csr.n_users), dtype=np.int64)
        model, popular = part[encodable[part]], part[~encodable[part]]
        if len(model):
            yield scorer.model_rows(csr, model, user_ids)
        if len(popular):
            yield scorer.popular_rows(csr, popular, user_ids)


def user_model(manifest: dict, weights: bytes) -> UserAE:
    """The user AE of ``models/ds=…`` from its manifest and ``user_ae.pt`` bytes (on the CPU, eval mode)."""
    dims = manifest["dims"]
    user_config = UserAEConfig(**manifest["config"]["user"])
    user_config.validate()  # run_spark_scoring checked it on the driver (check_user_config names the file)
    model = UserAE(dims["n_films"], torch.zeros(dims["n_films"], dims["film_content_dim"]), user_config)
    model.load_state_dict(torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True))
    return model.eval()


_SCORERS: dict[tuple[str, str, bool], BatchScorer] = {}  # per Python worker: (version, device, exact) -> scorer


class DeviceSet(AccumulatorParam):
    """An accumulator of the devices the executors scored on (a set: task retries add nothing)."""

    def zero(self, value: set) -> set:
        return set()

    def addInPlace(self, value1: set, value2: set) -> set:
        value1 |= value2
        return value1


class ScoreTask:
    """The ``mapInArrow`` function: Arrow batches of users -> Arrow batches of rows (SCHEMA).

    Pickled to the executors with the broadcast payload; the model is built once per Python
    worker and version, then reused by every task that worker runs.
    """

    def __init__(self, payload, version: str, config: ScoreConfig, torch_threads: int, devices) -> None:
        self.payload, self.version, self.config = payload, version, config
        self.torch_threads, self.devices = torch_threads, devices

    def _scorer(self) -> BatchScorer:
        device, bf16 = select_device(self.config.device)
        key = (self.version, str(device), self.config.exact)
        if key not in _SCORERS:
            _SCORERS.clear()  # one model per worker
            shipped = self.payload.value
            model = user_model(shipped["manifest"], shipped["weights"]).to(device)
            _SCORERS[key] = BatchScorer(model, shipped["movie_ids"], shipped["film_counts"], self.version,
                                        self.config.top_n, device, bf16, self.config.exact)  # fmt: skip
        return _SCORERS[key]

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        context = TaskContext.get()
        threads = self.torch_threads or (context.cpus() if context is not None else 1)
        torch.set_num_threads(max(1, threads))
        warm_up_cpu_math()  # same bits as the local scorer (see recsys_core.reproducible)
        scorer = self._scorer()
        self.devices.add({str(scorer.device)})
        n_films = len(scorer.movie_ids)
        for batch in batches:
            csr, user_ids = users_csr(batch, n_films)
            for table in score_users(scorer, csr, user_ids, self.config.batch_size, self.config.min_user_films):
                yield from table.to_batches()


# ---------------------------------------------------------------- driver side


def _read_json(spark: SparkSession, path: str, missing: str) -> dict:
    if not fs.exists(spark, path):
        raise InputError(missing)
    return json.loads(fs.read_text(spark, path))


def _read_bytes(spark: SparkSession, path: str, missing: str) -> bytes:
    """One file's bytes, copied by the JVM's Hadoop filesystem (any URI) to a local temp file."""
    if not fs.exists(spark, path):
        raise InputError(missing)
    jvm = spark.sparkContext._jvm
    source = jvm.org.apache.hadoop.fs.Path(path)
    hadoop_fs = source.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(path))
        hadoop_fs.copyToLocalFile(False, source, jvm.org.apache.hadoop.fs.Path(f"file://{local}"), True)
        with open(local, "rb") as f:
            return f.read()


def _parquet_files(spark: SparkSession, directory: str) -> list[str]:
    """The data files Spark wrote into ``directory`` (not its ``_SUCCESS`` or ``.crc`` files)."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(directory)
    statuses = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).listStatus(path)
    names = [status.getPath() for status in statuses]
    return [str(p.toString()) for p in names if p.getName().endswith(".parquet") and p.getName()[0] not in "._"]


def film_table(spark: SparkSession, features_dir: str, per_film: DataFrame | None) -> tuple[np.ndarray, np.ndarray]:
    """((n_films,) movie ids by film_idx, (n_films,) ratings per film over every user).

    ``per_film`` holds (film_idx, count) rows, or is None when no user needs the counts
    (zeros then); film-sized collects only. Raises InputError when film_idx is not dense
    or a user's film_idx lies outside the vocabulary.
    """
    films = spark.read.parquet(f"{features_dir}/films").select("film_idx", "movie_id").collect()
    films.sort(key=lambda r: r["film_idx"])
    if [r["film_idx"] for r in films] != list(range(len(films))):
        raise InputError(f"{features_dir}/films: film_idx is not a dense 0..n-1 index")
    movie_ids = np.array([r["movie_id"] for r in films], dtype=np.int64)
    counts = np.zeros(len(films), dtype=np.int64)
    for row in [] if per_film is None else per_film.collect():
        if not 0 <= row["film_idx"] < len(films):
            raise InputError(f"{features_dir}/users: film_idx {row['film_idx']} outside the vocabulary "
                             f"of {len(films)} films")  # fmt: skip
        counts[row["film_idx"]] = row["count"]
    return movie_ids, counts


def run_spark_scoring(spark: SparkSession, warehouse: Warehouse, ds: str, config: ScoreConfig | None = None,
                      torch_threads: int = 0) -> dict:  # fmt: skip
    """Score every user of ``features/ds=…`` on the executors; returns the ``_scoring.json`` summary.

    ``torch_threads`` 0 gives each task the cores it holds (``spark.task.cpus``). Raises
    InputError (no features, no model, a model of other features) and ConfigError (bad
    ``config``) before any executor work.
    """
    config = config or ScoreConfig()
    config.validate()
    if torch_threads < 0:
        raise ConfigError(f"--torch-threads must be >= 0 (0: the task's cores), got {torch_threads}")
    started = time.monotonic()
    features_dir, model_dir = warehouse.features(ds), warehouse.models(ds)
    features_manifest = _read_json(spark, f"{features_dir}/manifest.json",
                                   f"no features at {features_dir}: run the features job for that date first")
    model_manifest = _read_json(spark, f"{model_dir}/{artifacts.MANIFEST}",
                                f"no model at {model_dir}: run the train job for that date first")  # fmt: skip
    artifacts.check_vocabulary(model_manifest, features_manifest, model_dir)
    artifacts.check_user_config(model_manifest, f"{model_dir}/{artifacts.MANIFEST}")  # on the driver: one clear line
    weights = _read_bytes(spark, f"{model_dir}/{artifacts.USER_WEIGHTS}",
                          f"{model_dir}/{artifacts.USER_WEIGHTS} is missing: re-run the train job for ds={ds}")
    version = version_string(ds, hashlib.sha256(weights).hexdigest())  # the bytes are here already: no second read

    users = spark.read.parquet(f"{features_dir}/users").select(*USER_COLUMNS)
    encodable = F.coalesce(F.size("film_idx"), F.lit(0)) >= config.min_user_films
    counted = users.agg(F.count("*").alias("n"), F.count(F.when(encodable, 1)).alias("model")).head()
    n_users, model_users = int(counted["n"]), int(counted["model"])
    # the popularity fallback's score: one pass over the ratings, only when some user needs it
    per_film = users.select(F.explode("film_idx").alias("film_idx")).groupBy("film_idx").count()
    movie_ids, film_counts = film_table(spark, features_dir, per_film if model_users < n_users else None)
    log.info("scoring ds=%s on %s: %d users (%d by popularity), %d films, top %d, model %s",
             ds, spark.sparkContext.master, n_users, n_users - model_users, len(movie_ids), config.top_n, version)

    sc = spark.sparkContext
    payload = sc.broadcast({"manifest": model_manifest, "weights": weights, "movie_ids": movie_ids,
                            "film_counts": film_counts})  # fmt: skip
    devices = sc.accumulator(set(), DeviceSet())
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(config.batch_size))
    rows = users.mapInArrow(ScoreTask(payload, version, config, torch_threads, devices), from_arrow_schema(SCHEMA))

    final = warehouse.recommendations_staging(ds)
    staging = staging_path(final)
    try:
        rows.write.mode("overwrite").parquet(staging)
        parts = _parquet_files(spark, staging)  # named: Spark would skip the hidden directory itself
        written = spark.read.parquet(*parts).count() if parts else 0
        summary = {
            "ds": ds, "top_n": config.top_n, "model_version": version, "device": ",".join(sorted(devices.value)),
            "users": n_users, "model_users": model_users, "popularity_users": n_users - model_users,
            "rows": written, "films": len(movie_ids), "seconds": round(time.monotonic() - started, 3),
            "exact": config.exact,
            "engine": "spark", "master": sc.master,
        }  # fmt: skip
        fs.write_text(spark, f"{staging}/{SCORING_META}", json.dumps(summary, indent=2))
        fs.swap_in(spark, staging, final)
    finally:
        fs.delete(spark, staging)
        payload.destroy()
    log.info("scored %d users into %d rows in %.1fs", n_users, written, summary["seconds"])
    return summary
