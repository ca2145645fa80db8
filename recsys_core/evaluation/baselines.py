"""Baselines measured in the same run, on the same split: the method framework
(``Baseline``, ``run_baseline``, ``recommend``), popularity (all-time and recent), item-kNN
and Spark ALS. The EASE family (EASE, EDLAE, DLAE, recency-weighted) lives in
``recsys_core.evaluation.baselines_linear`` on the same framework.

Every baseline works in one index space: users are rows of a ``RatingsCSR`` and items
are the catalog's indices (films with a training rating, by ascending movieId, the same
order as the features vocabulary). Hyper-parameters are chosen by NDCG@10 on an inner
temporal split of the training part (``InnerSplit``), then the baseline is fitted again on
the whole training part. Lists come from ``recsys_core.ranking.top_n.top_n_lists``, the
scoring job's own top-N code: seen films excluded, ties broken by movieId.

Costs are sized for evaluation-scale data (ml-latest-small: seconds per method, about a
minute for each ALS grid). The EASE family and item-kNN hold dense items x items (or
users x items) matrices, so they suit catalogs up to a few 10K films: the full release's
58K films would need tens of GB.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recsys_core.data.csr import LIKED_RATING, RatingsCSR
from recsys_core.models.ease import gram
from recsys_core.ranking.metrics import ranking_metrics
from recsys_core.ranking.top_n import top_n_lists

log = logging.getLogger(__name__)

Scorer = Callable[[np.ndarray], np.ndarray]  # user rows -> (len(rows), n_films) float32 scores
TUNE_METRIC = "ndcg@10"


def ratings_csr(ratings: pd.DataFrame, user_ids: np.ndarray, film_ids: np.ndarray) -> RatingsCSR:
    """The training ratings (userId, movieId, rating[, timestamp] columns) as a users x films CSR.

    ``user_ids`` and ``film_ids`` are the sorted id vocabularies (row i = user_ids[i], film j
    = film_ids[j]). Ratings of unknown films are dropped; raises ValueError for a rating of a
    user outside ``user_ids``.
    """
    u = np.searchsorted(user_ids, ratings["userId"].to_numpy())
    m = np.searchsorted(film_ids, ratings["movieId"].to_numpy())
    m_ok = (m < len(film_ids)) & (film_ids[np.minimum(m, len(film_ids) - 1)] == ratings["movieId"].to_numpy())
    u_ok = (u < len(user_ids)) & (user_ids[np.minimum(u, len(user_ids) - 1)] == ratings["userId"].to_numpy())
    if not u_ok.all():
        raise ValueError("ratings of users outside the user vocabulary")
    timestamps = ratings["timestamp"].to_numpy()[m_ok] if "timestamp" in ratings else None
    return RatingsCSR.from_entries(u[m_ok], m[m_ok], len(user_ids), len(film_ids),
                                   ratings["rating"].to_numpy(dtype=np.float32)[m_ok], timestamps)  # fmt: skip


def feedback(data: RatingsCSR, kind: str = "all") -> RatingsCSR:
    """The implicit feedback a method learns from: every rating (``all``) or only the liked
    ones, >= ``LIKED_RATING`` (``positive``). Seen films are always all ratings."""
    if kind == "all":
        return data
    if kind != "positive":
        raise ValueError(f"feedback must be all or positive, got {kind!r}")
    return data.liked(LIKED_RATING)


@dataclass
class InnerSplit:
    """The tuning split: ``train`` (the training part minus each user's last ratings) and the
    users whose held-out tail has relevant items."""

    train: RatingsCSR
    users: np.ndarray  # rows of the tuning users
    relevant: RatingsCSR  # one row per tuning user: their relevant films


def recommend(scorer: Scorer, seen: RatingsCSR, users: np.ndarray, n: int, batch: int = 1024) -> np.ndarray:
    """(len(users), min(n, n_films)) top lists of unseen films, -1 where a user has fewer.

    Films scored ``-inf`` (unknown to the method) are never recommended.
    """
    out = np.full((len(users), min(n, seen.n_films)), -1, dtype=np.int64)
    for lo in range(0, len(users), batch):
        rows = users[lo : lo + batch]
        values = np.ascontiguousarray(scorer(rows), dtype=np.float32)
        if not values.flags.writeable:  # top_n_lists masks seen films in place
            values = values.copy()
        part = seen.select_rows(rows)
        seen_rows = torch.from_numpy(part.entry_rows())
        out[lo : lo + len(rows)] = top_n_lists(torch.from_numpy(values), seen_rows, torch.from_numpy(part.indices), n)
    return out


class Baseline:
    """A method: a grid of parameters and a ``fit`` returning a scorer.

    ``run_baseline`` scores every point of ``grid()`` on the inner split, then the points
    ``refine`` proposes from those scores (a second, narrower stage of a coordinate search;
    none by default), and keeps the best of all.
    """

    name = "baseline"

    def grid(self) -> list[dict]:
        return [{}]

    def refine(self, scored: list[tuple[dict, float]]) -> list[dict]:
        """Further points to tune, given every (params, inner NDCG@10) scored so far."""
        return []

    def fit(self, data: RatingsCSR, params: dict) -> Scorer:
        raise NotImplementedError

    def close(self) -> None:
        """Drop caches held between fits."""


FEEDBACK = ("all", "positive")


class Popularity(Baseline):
    """Films by number of training ratings (all, or only those >= the relevance threshold:
    chosen on the inner split), ties by movieId, rated ones excluded."""

    name = "popularity"

    def __init__(self, feedback: tuple[str, ...] = FEEDBACK):
        self.feedbacks = feedback

    def grid(self) -> list[dict]:
        return [{"feedback": f} for f in self.feedbacks]

    def fit(self, data: RatingsCSR, params: dict) -> Scorer:
        counts = feedback(data, params.get("feedback", "all")).film_counts().astype(np.float32)
        return lambda rows: np.repeat(counts[None, :], len(rows), axis=0)


DAY_SECONDS = 86_400
RECENT_WINDOWS = (7.0, 30.0, 90.0, 365.0, math.inf)  # days before the cut; inf: all time


class PopularityRecent(Baseline):
    """Films by number of likes (ratings >= ``LIKED_RATING``) in the last ``window_days``
    days before the cut, ties by movieId, rated ones excluded.

    The cut is the training data's last timestamp (seconds since the epoch): a like counts
    when ``timestamp >= cut - window_days * 86400``. The window is tuned on the inner split
    (whose cut is the inner training part's last rating); ``inf`` in the grid is all-time
    popularity of liked feedback (``Popularity`` with ``feedback = positive``).
    """

    name = "popularity_recent"

    def __init__(self, windows: tuple[float, ...] = RECENT_WINDOWS):
        self.windows = windows

    def grid(self) -> list[dict]:
        return [{"window_days": float(w)} for w in self.windows]

    def fit(self, data: RatingsCSR, params: dict) -> Scorer:
        """Raises ValueError for a window <= 0, or a finite one on ratings without timestamps."""
        window = params["window_days"]
        if not window > 0:
            raise ValueError(f"window_days must be > 0 (inf: all time), got {window}")
        liked = data.liked(LIKED_RATING)
        if math.isinf(window):
            keep = np.ones(len(liked.indices), dtype=bool)
        else:
            if len(data.timestamps) and not data.timestamps.any():
                raise ValueError("a recent window needs the ratings' timestamps (every one is 0)")
            cut = int(data.timestamps.max(initial=0))
            keep = liked.timestamps >= cut - window * DAY_SECONDS
        counts = np.bincount(liked.indices[keep], minlength=data.n_films).astype(np.float32)
        return lambda rows: np.repeat(counts[None, :], len(rows), axis=0)


class ItemKNN(Baseline):
    """Item-based kNN with cosine similarity on binary X: score(u, j) = sum of sim(i, j) over
    the user's films i among the ``k`` most similar films of j (shrink dampens small overlaps)."""

    name = "item_knn"

    def __init__(self, ks: tuple[int, ...] = (20, 50, 100, 200), shrink: float = 10.0,
                 feedback: tuple[str, ...] = FEEDBACK):  # fmt: skip
        self.ks, self.shrink, self.feedbacks = ks, shrink, feedback
        self._cache: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def grid(self) -> list[dict]:
        return [{"feedback": f, "k": int(k), "shrink": self.shrink} for f in self.feedbacks for k in self.ks]

    def _neighbours(self, data: RatingsCSR) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, rows) of each column's max(ks) most similar items, best first."""
        if self._cache is None or self._cache[0] != id(data):
            g = gram(data)
            norms = torch.sqrt(torch.diagonal(g)).clone()
            sim = g / (norms[:, None] * norms[None, :] + self.shrink + 1e-12)
            sim.fill_diagonal_(0.0)
            k = min(max(self.ks), data.n_films)
            values, rows = torch.topk(sim, k, dim=0)
            self._cache = (id(data), values, rows)
        return self._cache[1], self._cache[2]

    def fit(self, data: RatingsCSR, params: dict) -> Scorer:
        data = feedback(data, params.get("feedback", "all"))
        values, rows = self._neighbours(data)
        k = min(params["k"], values.shape[0])
        sim = torch.zeros((data.n_films, data.n_films), dtype=torch.float32)
        sim.scatter_(0, rows[:k], values[:k])

        def scores(users: np.ndarray) -> np.ndarray:
            return (data.dense(users) @ sim).numpy()

        return scores

    def close(self) -> None:
        self._cache = None


class SparkALS(Baseline):
    """Spark MLlib ALS, explicit (on the ratings) or implicit (binary preferences from all
    ratings or only the relevant ones, confidence 1 + alpha). Factors are collected
    (users x rank, items x rank: small) and scored in numpy; items ALS never saw score -inf.
    Each fit is a Spark job (seconds even on small data), so the default grids are small."""

    def __init__(self, spark, work_dir: str | Path, implicit: bool, grid: list[dict] | None = None,
                 max_iter: int = 10, seed: int = 42):  # fmt: skip
        self.spark, self.work_dir, self.implicit = spark, Path(work_dir), implicit
        self.max_iter, self.seed = max_iter, seed
        self.name = "als_implicit" if implicit else "als_explicit"
        if grid is None:
            grid = (
                [{"feedback": f, "rank": 64, "regParam": 0.1, "alpha": a} for f in FEEDBACK for a in (2.0, 10.0)]
                if implicit
                else [{"rank": 32, "regParam": p} for p in (0.05, 0.2, 0.5)]
            )
        self._grid = grid
        self._frames: dict[int, object] = {}

    def grid(self) -> list[dict]:
        return self._grid

    def _frame(self, data: RatingsCSR):
        """The interactions as a Spark DataFrame, via parquet (no driver-side pickling)."""
        if id(data) not in self._frames:
            path = self.work_dir / f"als_input_{len(self._frames)}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame({
                "user": data.entry_rows(np.int32),
                "item": data.indices.astype(np.int32),
                "rating": (np.ones_like(data.ratings) if self.implicit else data.ratings).astype(np.float32),
            }).to_parquet(path, index=False)  # fmt: skip
            self._frames[id(data)] = self.spark.read.parquet(str(path)).cache()
        return self._frames[id(data)]

    def fit(self, data: RatingsCSR, params: dict) -> Scorer:
        from pyspark.ml.recommendation import ALS

        data = feedback(data, params.get("feedback", "all"))
        blocks = max(1, min(8, self.spark.sparkContext.defaultParallelism))
        als = ALS(rank=params["rank"], regParam=params["regParam"], alpha=params.get("alpha", 1.0),
                  implicitPrefs=self.implicit, maxIter=self.max_iter, seed=self.seed,
                  numUserBlocks=blocks, numItemBlocks=blocks,
                  userCol="user", itemCol="item", ratingCol="rating")  # fmt: skip
        model = als.fit(self._frame(data))
        user_f = _factors(model.userFactors.toPandas(), data.n_users, params["rank"])
        items = model.itemFactors.toPandas()
        item_f = _factors(items, data.n_films, params["rank"])
        known = np.zeros(data.n_films, dtype=bool)
        known[items["id"].to_numpy()] = True

        def scores(rows: np.ndarray) -> np.ndarray:
            s = user_f[rows] @ item_f.T
            s[:, ~known] = -np.inf
            return s

        return scores

    def close(self) -> None:
        for frame in self._frames.values():
            frame.unpersist()
        self._frames.clear()


def _factors(frame: pd.DataFrame, n: int, rank: int) -> np.ndarray:
    out = np.zeros((n, rank), dtype=np.float32)
    if len(frame):
        out[frame["id"].to_numpy()] = np.stack(frame["features"].to_numpy()).astype(np.float32)
    return out


@dataclass
class BaselineResult:
    name: str
    top: np.ndarray  # (len(users), n) item indices, -1 padded
    params: dict
    grid: list[dict] = field(default_factory=list)  # params + tuning metric of every grid point
    seconds: dict = field(default_factory=dict)  # tune, fit, recommend, total


def run_baseline(
    method: Baseline, train: RatingsCSR, users: np.ndarray, n: int, inner: InnerSplit | None = None
) -> BaselineResult:
    """Tune on ``inner`` (when the grid has more than one point), fit on ``train``, recommend.

    Tuning scores ``method.grid()``, then ``method.refine(...)``'s points, by NDCG@10 of
    top-10 lists of ``inner.users``; the first best point wins ties.
    """
    t0 = time.monotonic()
    grid = method.grid()
    results: list[dict] = []
    best = grid[0]
    if inner is not None and len(grid) > 1 and len(inner.users):
        scored: list[tuple[dict, float]] = []

        def tune(points: list[dict]) -> None:
            for params in points:
                if any(params == done for done, _ in scored):
                    continue
                top = recommend(method.fit(inner.train, params), inner.train, inner.users, 10)
                value = ranking_metrics(top, inner.relevant, {TUNE_METRIC: 10})[TUNE_METRIC]
                scored.append((params, value))
                results.append({**params, f"inner_{TUNE_METRIC}": round(value, 5)})
                log.info("%s %s: inner %s %.4f", method.name, params, TUNE_METRIC, value)

        tune(grid)
        tune(method.refine(list(scored)))
        best = max(scored, key=lambda point: point[1])[0]  # max keeps the first of equals
    t1 = time.monotonic()
    scorer = method.fit(train, best)
    t2 = time.monotonic()
    top = recommend(scorer, train, users, n)
    t3 = time.monotonic()
    method.close()
    seconds = {"tune": t1 - t0, "fit": t2 - t1, "recommend": t3 - t2, "total": t3 - t0}
    log.info("%s: params %s, %.1fs (tune %.1fs)", method.name, best, seconds["total"], seconds["tune"])
    return BaselineResult(method.name, top, dict(best), results, {k: round(v, 3) for k, v in seconds.items()})
