"""The generator's time option (recsys_core.data.synthetic_time): films released over the
years, taste that drifts along each user's history, a sparse release-driven shape; and the
default output unchanged, byte for byte."""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from recsys_core.data.generator import generate
from recsys_core.data.synthetic_time import TemporalShape

FILES = ("ratings.csv", "movies.csv", "genome-scores.csv", "genome-tags.csv", "tags.csv", "links.csv")
# generate(scale=0.002, seed=3, genome_tags=8) before the time option existed (commit e621523)
DEFAULT_DIGESTS = {
    "ratings.csv": "879fe41ac6529357597476d2a8e5da02c98e27301f1f4c622dc1170c056ac821",
    "movies.csv": "94f867ad529c9f78a0effdf81478a43ac7ef605b9fcfa7a7a89e13ff2ebd33c5",
    "genome-scores.csv": "173f0d6b38c41e65e1e3555cd5e445b9328323b1841ace32b1e0d13fca5b4294",
    "genome-tags.csv": "997f0a93b82d9a951ec46386429d6ce29f4c4fc7398ae1dbf2d68e42b46b4091",
    "tags.csv": "141721ea42546b216ca0a392d0ccfa0ec83c74b94ce896df1e6f2f7ba8baa1c4",
    "links.csv": "e96f7f36971baf40f25973d7ee5caa8a9b696b236d879105a1f0df591020abe2",
}
YEAR = 365 * 86_400


def read(directory: Path) -> pd.DataFrame:
    r = pd.read_csv(directory / "ratings.csv")
    movies = pd.read_csv(directory / "movies.csv")
    year = pd.to_numeric(movies["title"].str.extract(r"\((\d{4})\)\s*$", expand=False), errors="coerce")
    r["title_year"] = r["movieId"].map(dict(zip(movies["movieId"], year)))
    r["year"] = pd.to_datetime(r["timestamp"], unit="s").dt.year
    r = r.sort_values(["userId", "timestamp", "movieId"], kind="stable").reset_index(drop=True)
    r["pos"] = r.groupby("userId").cumcount()
    r["n"] = r.groupby("userId")["movieId"].transform("size")
    return r


@pytest.fixture(scope="module")
def drops(tmp_path_factory) -> dict[str, pd.DataFrame]:
    root = tmp_path_factory.mktemp("gen_time")
    out = {}
    for name, temporal in (("plain", None), ("time", TemporalShape.movielens()),
                           ("release", TemporalShape.release_driven())):  # fmt: skip
        generate(root / name, scale=0.003, seed=5, genome_tags=8, temporal=temporal)
        out[name] = read(root / name)
    return out


def test_default_output_is_unchanged(tmp_path):
    generate(tmp_path / "a", scale=0.002, seed=3, genome_tags=8)
    digests = {f: hashlib.sha256((tmp_path / "a" / f).read_bytes()).hexdigest() for f in FILES}
    assert digests == DEFAULT_DIGESTS


def test_same_seed_same_bytes_with_time(tmp_path):
    for name in ("a", "b"):
        generate(tmp_path / name, scale=0.002, seed=3, genome_tags=8, temporal=TemporalShape.movielens())
    for f in FILES:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_ratings_start_at_release_and_concentrate_after_it(drops):
    for name in ("time", "release"):
        r = drops[name]
        known = r["title_year"].notna()
        assert (r.loc[known, "year"] >= r.loc[known, "title_year"]).all(), name  # never before release
        assert not r.duplicated(["userId", "movieId"]).any()
        assert r["timestamp"].between(789_652_009, 1_537_799_250).all()
    share = {}
    for name, r in drops.items():
        first = r.groupby("movieId")["timestamp"].transform("min")
        inside = (first > r["timestamp"].min() + YEAR) & (first < r["timestamp"].max() - YEAR) & (r["timestamp"] > first)
        share[name] = ((r["timestamp"] - first)[inside] <= YEAR).mean()  # later ratings in the first year
    # ml-latest-small: 0.175 of a film's later ratings come within a year of its first one
    assert share["plain"] < 0.06 and 0.12 < share["time"] < 0.3 and share["release"] > 0.3, share
    new = {name: ((r["year"] - r["title_year"]).between(0, 1)).mean() for name, r in drops.items()}
    assert new["release"] > 0.5 and new["release"] > 2 * new["time"], new  # most ratings on recent films


def test_release_driven_shape_is_sparse(drops):
    per_user = drops["release"].groupby("userId").size()
    assert per_user.median() <= 4 and (per_user < 5).mean() > 0.5
    assert drops["release"]["userId"].nunique() == 3 * drops["plain"]["userId"].nunique()


def tail_recall_by_quarter(r: pd.DataFrame, lam: float = 200.0) -> list[float]:
    """Recall@20 of each user's tail (last 20%) by EASE fed only one quarter of the rest:
    oldest to latest (bench/data_time.py's drift measure, in dense numpy)."""
    r = r[r["n"] >= 20].copy()
    tail = np.maximum(1, np.floor(r["n"] * 0.2 + 1e-9)).astype(int)
    hist = r["n"] - tail
    r["block"] = np.where(r["pos"] >= hist, 4, np.minimum(3, r["pos"] * 4 // hist))
    users = pd.factorize(r["userId"])[0]
    films = pd.factorize(r["movieId"])[0]
    blocks = [np.zeros((users.max() + 1, films.max() + 1), dtype=np.float32) for _ in range(5)]
    for b in range(5):
        m = (r["block"] == b).to_numpy()
        blocks[b][users[m], films[m]] = 1.0
    history = sum(blocks[:4])
    p = np.linalg.inv(history.T @ history + lam * np.eye(history.shape[1], dtype=np.float32))
    weights = -p / np.diag(p)
    np.fill_diagonal(weights, 0.0)
    out = []
    for q in range(4):
        scores = np.where(history > 0, -np.inf, blocks[q] @ weights)
        top = np.argpartition(-scores, 20, axis=1)[:, :20]
        found = np.take_along_axis(blocks[4], top, axis=1).sum(axis=1)
        out.append(float(np.mean(found / np.minimum(20, blocks[4].sum(axis=1)))))
    return out


def test_later_ratings_are_closer_to_later_taste(drops):
    """ml-latest-small: EASE fed the latest quarter of a user's history finds 1.55x the tail
    films that the oldest quarter finds (0.160 vs 0.103); the time-free generator: no gain."""
    plain, timed = tail_recall_by_quarter(drops["plain"]), tail_recall_by_quarter(drops["time"])
    assert 0.9 < plain[3] / plain[0] < 1.1, plain
    assert timed[3] / timed[0] > 1.25 and timed[3] > timed[2] > timed[0], timed


def test_recency_weighted_ease_beats_ease_on_generated_data(tmp_path):
    """As on the held-back MovieLens releases of issue 18: with the same tuning on the inner
    split as ``recsys evaluate``, recency-weighted EASE finds more of the held-out tail."""
    from recsys_core.evaluation import baselines, baselines_linear
    from recsys_core.evaluation.run import EvalIndex, inner_split
    from recsys_core.evaluation.split import temporal_holdout
    from recsys_core.ranking.metrics import ranking_metrics

    # every pick from the moving interest (the MovieLens preset keeps 10% on the user's own
    # segment, which dilutes the gain to about +3% with seed-to-seed noise of the same size;
    # this one gains 4-9% NDCG@10 and 3-6% Recall@20 on seeds 1-6)
    generate(tmp_path, scale=0.003, seed=2, genome_tags=8,
             temporal=replace(TemporalShape.movielens(), drift_weight=1.0, drift_every=20))  # fmt: skip
    ratings = pd.read_csv(tmp_path / "ratings.csv")
    train, held = temporal_holdout(ratings)
    index = EvalIndex(train, held, 4.0)
    split = SimpleNamespace(stats={"fraction": 0.2, "min_ratings": 5}, relevant_rating=4.0)
    inner = inner_split(train, index, split, 0, 5_000)
    data = baselines.ratings_csr(train, index.user_ids, index.catalog)
    lambdas, feedback = (100.0, 200.0, 400.0), ("all",)
    figures = {}
    for name, method in (("ease", baselines_linear.EASE(lambdas, feedback)),
                         ("recency", baselines_linear.ease_recency(lambdas, (10.0, 20.0, 40.0, math.inf), feedback))):  # fmt: skip
        result = baselines.run_baseline(method, data, index.eval_rows, 20, inner)
        figures[name] = ranking_metrics(index.full_lists(result.top), index.relevant, {"ndcg@10": 10, "recall@20": 20})
        figures[name]["params"] = result.params
    assert math.isfinite(figures["recency"]["params"]["half_life"]), figures
    assert figures["recency"]["ndcg@10"] > 1.02 * figures["ease"]["ndcg@10"], figures
    assert figures["recency"]["recall@20"] > 1.01 * figures["ease"]["recall@20"], figures
