"""``recsys evaluate``: split a drop, run the nightly code paths on the training part,
measure the model and the baselines on the held-out ratings, write the report.

The model goes through exactly what the DAG runs: ``run_ingest`` and ``run_features``
(Spark) on the training drop, ``run_training`` and ``run_scoring``; its lists are read
from the scoring job's staging partition. The baselines are fitted on the ingest
snapshot's ratings (the same validated rows the model saw), so every method sees the same
data and is judged on the same held-out users.

Index spaces: users are the snapshot's userIds (sorted); items are the catalog (films
with a training rating, by movieId: the features vocabulary) followed by films that only
occur in the held-out part (relevant, never recommendable). Held-out users that are
missing from the training data get empty lists and count as misses.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recsys_core.data.csr import RatingsCSR, indptr_from_counts
from recsys_core.errors import ConfigError, InputError
from recsys_core.evaluation import baselines, baselines_linear
from recsys_core.evaluation.split import Split, split_drop, temporal_holdout
from recsys_core.ranking.metrics import evaluate_top_lists

log = logging.getLogger(__name__)

MODEL = "model"
BASELINES = ("popularity", "popularity_recent", "ease", "edlae", "dlae", "ease_recency", "edlae_recency",
             "item_knn", "als_explicit", "als_implicit")  # fmt: skip
DEFAULT_METHODS: tuple[str, ...] = (MODEL, *BASELINES)
METHOD_LABELS = {
    MODEL: "user AE + item-item (this project)",
    "popularity": "popularity",
    "popularity_recent": "recent popularity",
    "ease": "EASE",
    "edlae": "EDLAE",
    "dlae": "DLAE (full rank)",
    "ease_recency": "EASE, recency-weighted",
    "edlae_recency": "EDLAE, recency-weighted",
    "item_knn": "item-kNN (cosine)",
    "als_explicit": "ALS explicit (Spark)",
    "als_implicit": "ALS implicit (Spark)",
}
ACTIVITY_EDGES = (0, 20, 50, 100, 200, 500)  # training ratings per user: bucket lower bounds
BUCKET_METRIC = "recall@20"


def activity_labels(edges: tuple[int, ...] = ACTIVITY_EDGES) -> list[str]:
    labels = [f"{lo}-{hi - 1}" for lo, hi in itertools.pairwise(edges)]
    return [*labels, f"{edges[-1]}+"]


class EvalIndex:
    """Id <-> index maps shared by every method (see the module docstring)."""

    def __init__(self, train: pd.DataFrame, heldout: pd.DataFrame, relevant_rating: float):
        self.user_ids = np.unique(train["userId"].to_numpy()).astype(np.int64)
        self.catalog = np.unique(train["movieId"].to_numpy()).astype(np.int64)
        extra = np.setdiff1d(heldout["movieId"].to_numpy(), self.catalog)
        self.items = np.concatenate([self.catalog, extra]).astype(np.int64)
        self.item_order = np.argsort(self.items, kind="stable")
        self.eval_ids = np.unique(heldout["userId"].to_numpy()).astype(np.int64)
        rows = np.searchsorted(self.user_ids, self.eval_ids)
        rows_c = np.minimum(rows, max(len(self.user_ids) - 1, 0))
        self.present = (rows < len(self.user_ids)) & (self.user_ids[rows_c] == self.eval_ids)
        self.eval_rows = rows_c[self.present]  # training rows of the evaluated users that have one
        rel = heldout[heldout["rating"] >= relevant_rating]
        self.relevant = RatingsCSR.from_entries(
            np.searchsorted(self.eval_ids, rel["userId"].to_numpy()), self.item_index(rel["movieId"].to_numpy()),
            len(self.eval_ids), len(self.items),
        )  # fmt: skip

    def item_index(self, movie_ids: np.ndarray) -> np.ndarray:
        """Global item index of known movieIds."""
        pos = np.searchsorted(self.items[self.item_order], movie_ids)
        pos = np.minimum(pos, len(self.items) - 1)
        found = self.items[self.item_order][pos] == movie_ids
        if not found.all():
            raise ValueError(f"{int((~found).sum())} movieIds outside the evaluation's item index")
        return self.item_order[pos]

    def full_lists(self, top_present: np.ndarray) -> np.ndarray:
        """Lists for every evaluated user from lists of the present ones (absent: empty)."""
        out = np.full((len(self.eval_ids), top_present.shape[1]), -1, dtype=np.int64)
        out[self.present] = top_present
        return out


def model_lists(staging_dir: str, index: EvalIndex, top_n: int) -> np.ndarray:
    """The scoring job's lists for the evaluated users, as (users x top_n) item indices."""
    table = pq.read_table(staging_dir, columns=["user_id", "rank", "movie_id"]).to_pandas()
    table = table[table["user_id"].isin(index.eval_ids)]
    out = np.full((len(index.eval_ids), top_n), -1, dtype=np.int64)
    rows = np.searchsorted(index.eval_ids, table["user_id"].to_numpy())
    ranks = table["rank"].to_numpy().astype(np.int64) - 1
    keep = ranks < top_n
    out[rows[keep], ranks[keep]] = index.item_index(table["movie_id"].to_numpy()[keep].astype(np.int64))
    return out


def inner_split(train: pd.DataFrame, index: EvalIndex, split: Split, seed: int, max_users: int) -> baselines.InnerSplit:
    """The same temporal holdout applied to the training part, for tuning the baselines."""
    inner_train, inner_held = temporal_holdout(train, split.stats["fraction"], split.stats["min_ratings"])
    data = baselines.ratings_csr(inner_train, index.user_ids, index.catalog)
    rel = inner_held[inner_held["rating"] >= split.relevant_rating]
    users = np.unique(np.searchsorted(index.user_ids, rel["userId"].to_numpy()))
    if len(users) > max_users:
        users = np.sort(np.random.default_rng([seed, 11]).choice(users, max_users, replace=False))
    rel = rel[rel["userId"].isin(index.user_ids[users])]
    relevant = RatingsCSR.from_entries(
        np.searchsorted(users, np.searchsorted(index.user_ids, rel["userId"].to_numpy())),
        np.searchsorted(index.catalog, rel["movieId"].to_numpy()), len(users), len(index.catalog),
    )  # fmt: skip
    return baselines.InnerSplit(data, users, relevant)


LINEAR = {"ease": baselines_linear.EASE, "edlae": baselines_linear.edlae, "dlae": baselines_linear.dlae,
          "ease_recency": baselines_linear.ease_recency, "edlae_recency": baselines_linear.edlae_recency}  # fmt: skip


def make_baseline(name: str, spark, work_dir: Path, seed: int, options: dict) -> baselines.Baseline:
    """The baseline ``name`` built with ``options[name]`` (constructor keyword arguments:
    grids, caps). Raises ConfigError for an unknown name."""
    opts = options.get(name, {})
    if name == "popularity":
        return baselines.Popularity(**opts)
    if name == "popularity_recent":
        return baselines.PopularityRecent(**opts)
    if name in LINEAR:
        return LINEAR[name](**opts)
    if name == "item_knn":
        return baselines.ItemKNN(**opts)
    if name in ("als_explicit", "als_implicit"):
        return baselines.SparkALS(spark, work_dir / "als", implicit=name == "als_implicit", seed=seed, **opts)
    raise ConfigError(f"unknown method {name!r} (known: {', '.join(DEFAULT_METHODS)})")


def activity_buckets(per_user: dict[str, np.ndarray], train_counts: np.ndarray) -> dict:
    """Mean per-user ``BUCKET_METRIC`` of each method by the user's number of training ratings."""
    labels = activity_labels()
    bucket = np.searchsorted(np.array(ACTIVITY_EDGES), train_counts, side="right") - 1
    out: dict = {"labels": labels, "users": [], "methods": {}}
    first = next(iter(per_user.values()), None)
    scored = ~np.isnan(first) if first is not None else np.zeros(len(train_counts), dtype=bool)
    out["users"] = [int((scored & (bucket == b)).sum()) for b in range(len(labels))]
    for method, values in per_user.items():
        out["methods"][method] = [
            float(np.nanmean(values[bucket == b])) if (scored & (bucket == b)).any() else None
            for b in range(len(labels))
        ]  # fmt: skip
    return out


def _manifest_summary(manifest: dict) -> dict:
    keys = ("best_epoch", "epochs_run", "batch_size", "sampled_softmax", "device", "user_ae_seconds",
            "wall_seconds", "metrics", "history", "config", "dims", "refit", "item_item")  # fmt: skip
    return {k: manifest.get(k) for k in keys}


def run_evaluation(
    data_dir: str | Path,
    out_dir: str | Path,
    seed: int = 42,
    top_n: int = 100,
    methods: tuple[str, ...] | list[str] = DEFAULT_METHODS,
    train_config=None,
    *,
    spark=None,
    work_dir: str | Path | None = None,
    device: str | None = None,
    baseline_options: dict | None = None,
    max_tune_users: int = 5000,
    write_report: bool = True,
) -> dict:
    """Evaluate ``methods`` on a temporal holdout of the drop in ``data_dir``.

    Writes ``out_dir/metrics.json`` and (``write_report``) ``report.md`` / ``report.html``
    with PNG plots; the split, warehouse and baseline scratch go to ``work_dir`` (default
    ``out_dir/work``). ``train_config`` (a ``TrainConfig``) defaults to the shipped defaults
    with ``seed``; ``device`` overrides its device and the scoring device.
    ``baseline_options`` maps a baseline name to its constructor arguments (grids, caps).
    Returns the results dict that ``metrics.json`` holds.
    """
    from recsys_core.paths import Warehouse
    from recsys_core.scoring.score import ScoreConfig, run_scoring
    from recsys_core.spark.features import run_features
    from recsys_core.spark.ingest import run_ingest
    from recsys_core.training.train import TrainConfig, run_training

    methods = list(dict.fromkeys(methods))
    unknown = [m for m in methods if m not in DEFAULT_METHODS]
    if unknown or not methods:
        raise ConfigError(f"--methods: unknown {unknown or 'none given'} (known: {', '.join(DEFAULT_METHODS)})")
    if top_n < 100:
        raise ConfigError(f"--top-n must be >= 100 (NDCG@100 is reported), got {top_n}")
    out_dir = Path(out_dir)
    work = Path(work_dir) if work_dir is not None else out_dir / "work"
    out_dir.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    timings: dict[str, float] = {}

    t = time.monotonic()
    split = split_drop(data_dir, work)
    ds = split.ds
    timings["split"] = time.monotonic() - t

    own_spark = spark is None
    if own_spark:
        from recsys_core.spark.session import get_spark

        spark = get_spark("recsys-evaluate")
        spark.conf.set("spark.sql.shuffle.partitions", str(max(4, 2 * spark.sparkContext.defaultParallelism)))
    try:
        warehouse = Warehouse(str(work / "warehouse"))
        t = time.monotonic()
        run_ingest(spark, str(split.train_dir), warehouse, ds)
        features_manifest = run_features(spark, warehouse, ds)
        timings["prep"] = time.monotonic() - t
        train = pq.read_table(f"{warehouse.snapshot(ds)}/ratings").to_pandas()
        if len(train) == 0:
            raise InputError("the training part has no valid rating")
        index = EvalIndex(train, split.heldout, split.relevant_rating)
        if features_manifest["counts"]["films"] != len(index.catalog):
            log.warning("features vocabulary (%d films) != evaluation catalog (%d)",
                        features_manifest["counts"]["films"], len(index.catalog))  # fmt: skip
        interactions = baselines.ratings_csr(train, index.user_ids, index.catalog)
        lists: dict[str, np.ndarray] = {}
        method_info: dict[str, dict] = {}
        model_info: dict | None = None

        if MODEL in methods:
            config = train_config if train_config is not None else TrainConfig(seed=seed)
            if device is not None:
                config = replace(config, device=device)
            t = time.monotonic()
            run = run_training(warehouse, ds, config)
            t_fit = time.monotonic() - t
            t = time.monotonic()
            run_scoring(warehouse, ds, ScoreConfig(top_n=top_n, device=config.device))
            t_rec = time.monotonic() - t
            lists[MODEL] = model_lists(warehouse.recommendations_staging(ds), index, top_n)
            model_info = _manifest_summary(run.manifest)
            method_info[MODEL] = {
                "params": {"train_config": asdict(config)},
                "seconds": {"prep": round(timings["prep"], 3), "fit": round(t_fit, 3),
                            "recommend": round(t_rec, 3), "total": round(t_fit + t_rec, 3)},
            }  # fmt: skip

        wanted = [m for m in methods if m != MODEL]
        inner = None
        if any(m != "popularity" for m in wanted):  # every other baseline tunes on the inner split
            t = time.monotonic()
            inner = inner_split(train, index, split, seed, max_tune_users)
            timings["inner_split"] = time.monotonic() - t
        for name in wanted:
            method = make_baseline(name, spark, work, seed, baseline_options or {})
            result = baselines.run_baseline(method, interactions, index.eval_rows, top_n, inner)
            lists[name] = index.full_lists(result.top)
            method_info[name] = {"params": result.params, "grid": result.grid, "seconds": result.seconds}
    finally:
        if own_spark:
            spark.stop()

    item_counts = np.zeros(len(index.items), dtype=np.int64)
    item_counts[: len(index.catalog)] = interactions.film_counts()
    seen_present = interactions.select_rows(index.eval_rows)
    seen = _expand_sets(seen_present, index.present)
    train_counts = np.zeros(len(index.eval_ids), dtype=np.int64)
    train_counts[index.present] = np.diff(seen_present.indptr)
    per_user: dict[str, np.ndarray] = {}
    for name in methods:
        values: dict[str, np.ndarray] = {}
        method_info[name]["metrics"] = evaluate_top_lists(lists[name], index.relevant, seen, item_counts,
                                                          per_user_out=values)  # fmt: skip
        per_user[name] = values[BUCKET_METRIC]
        log.info("%s: %s", name, " ".join(f"{k} {v:.4f}" for k, v in method_info[name]["metrics"].items()
                                          if isinstance(v, float)))  # fmt: skip

    timings["total"] = time.monotonic() - started
    results = {
        "data_dir": str(data_dir),
        "seed": seed,
        "top_n": top_n,
        "ds": ds,
        "split": split.stats,
        "catalog_films": len(index.catalog),
        "training_users": len(index.user_ids),
        "methods": {name: {"label": METHOD_LABELS[name], **method_info[name]} for name in methods},
        "activity": activity_buckets(per_user, train_counts),
        "model": model_info,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "work_dir": str(work),
    }
    text = json.dumps(_strict_json(results), indent=2, default=_json_default, allow_nan=False)
    (out_dir / "metrics.json").write_text(text)
    if write_report:
        from recsys_core.evaluation.report import write_report as render

        results["report"] = render(out_dir, results)
    return results


def _expand_sets(sets: RatingsCSR, present: np.ndarray) -> RatingsCSR:
    """``sets`` has one row per present user; return one row per user (absent: empty)."""
    counts = np.zeros(len(present), dtype=np.int64)
    counts[present] = sets.counts
    return RatingsCSR(indptr_from_counts(counts), sets.indices, sets.ratings, sets.timestamps, sets.n_films)


def _strict_json(value):
    """``value`` with non-finite floats made valid JSON: +-inf (a "no decay" half-life, an
    all-time window) as the strings "inf" / "-inf", NaN as null."""
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_strict_json(v) for v in value]
    if isinstance(value, float | np.floating) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
