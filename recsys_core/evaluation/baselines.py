"""Baselines measured in the same run, on the same split: popularity, EASE, item-kNN, ALS.

Every baseline works in one index space: users are rows of ``Interactions`` and items
are the catalog's indices (films with a training rating, by ascending movieId, the same
order as the features vocabulary). Hyper-parameters are chosen by NDCG@10 on an inner
temporal split of the training part (``InnerSplit``), then the baseline is fitted again on
the whole training part. Lists come from ``recsys_core.scoring.rank.top_n_unseen``, the
scoring job's own top-N code: seen films excluded, ties broken by movieId.

Costs are sized for evaluation-scale data (ml-latest-small: seconds per method, about a
minute for each ALS grid): EASE is solved in its dual form when there are fewer users than
items. EASE and item-kNN hold dense items x items matrices (float32/float64), so they suit
catalogs up to a few 10K films: the full release's 58K films would need tens of GB.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recsys_core.evaluation.metrics import ItemSets, ranking_metrics
from recsys_core.scoring.rank import top_n_unseen

log = logging.getLogger(__name__)

Scorer = Callable[[np.ndarray], np.ndarray]  # user rows -> (len(rows), n_items) float32 scores
TUNE_METRIC = "ndcg@10"


@dataclass
class Interactions:
    """Training ratings as a users x items CSR (rows sorted by item within a user)."""

    indptr: np.ndarray  # (n_users + 1,) int64
    indices: np.ndarray  # (nnz,) int64 item index
    ratings: np.ndarray  # (nnz,) float32
    n_items: int
    relevant_rating: float = 4.0
    _derived: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    @property
    def rows(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_users, dtype=np.int64), np.diff(self.indptr))

    def feedback(self, kind: str = "all") -> Interactions:
        """The implicit feedback a method learns from: every rating (``all``) or only the
        ratings >= ``relevant_rating`` (``positive``). Seen films are always all ratings."""
        if kind == "all":
            return self
        if kind != "positive":
            raise ValueError(f"feedback must be all or positive, got {kind!r}")
        if kind not in self._derived:
            keep = self.ratings >= self.relevant_rating
            indptr = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])[self.indptr]
            self._derived[kind] = Interactions(indptr, self.indices[keep], self.ratings[keep], self.n_items,
                                               self.relevant_rating)  # fmt: skip
        return self._derived[kind]

    def item_counts(self) -> np.ndarray:
        return np.bincount(self.indices, minlength=self.n_items)

    def seen(self, rows: np.ndarray | None = None) -> ItemSets:
        """Each asked user's rated items (all users when ``rows`` is None)."""
        if rows is None:
            return ItemSets(self.indptr, self.indices)
        counts = self.indptr[rows + 1] - self.indptr[rows]
        starts = np.repeat(self.indptr[rows] - (np.cumsum(counts) - counts), counts)
        positions = np.arange(int(counts.sum()), dtype=np.int64) + starts
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return ItemSets(indptr, self.indices[positions])

    def dense(self, rows: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(len(rows), n_items) binary matrix of the asked users (1 = rated)."""
        seen = self.seen(rows)
        out = torch.zeros((len(rows), self.n_items), dtype=dtype)
        r = np.repeat(np.arange(len(rows)), np.diff(seen.indptr))
        out[torch.from_numpy(r), torch.from_numpy(seen.indices)] = 1
        return out

    @classmethod
    def from_frame(cls, ratings: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray,
                   relevant_rating: float = 4.0) -> Interactions:  # fmt: skip
        """From userId / movieId / rating columns; ``user_ids`` and ``item_ids`` are the sorted
        id vocabularies (row i = user_ids[i]). Ratings of unknown films are dropped."""
        u = np.searchsorted(user_ids, ratings["userId"].to_numpy())
        m = np.searchsorted(item_ids, ratings["movieId"].to_numpy())
        m_ok = (m < len(item_ids)) & (item_ids[np.minimum(m, len(item_ids) - 1)] == ratings["movieId"].to_numpy())
        u_ok = (u < len(user_ids)) & (user_ids[np.minimum(u, len(user_ids) - 1)] == ratings["userId"].to_numpy())
        if not u_ok.all():
            raise ValueError("ratings of users outside the user vocabulary")
        u, m, r = u[m_ok], m[m_ok], ratings["rating"].to_numpy(dtype=np.float32)[m_ok]
        order = np.lexsort((m, u))
        indptr = np.zeros(len(user_ids) + 1, dtype=np.int64)
        np.cumsum(np.bincount(u, minlength=len(user_ids)), out=indptr[1:])
        return cls(indptr, m[order].astype(np.int64), r[order], len(item_ids), relevant_rating)


@dataclass
class InnerSplit:
    """The tuning split: ``train`` (the training part minus each user's last ratings) and the
    users whose held-out tail has relevant items."""

    train: Interactions
    users: np.ndarray  # rows of the tuning users
    relevant: ItemSets  # one row per tuning user


def gram(data: Interactions, batch: int = 2048) -> torch.Tensor:
    """Items x items co-occurrence counts X^T X (float32; exact below 2^24 users)."""
    g = torch.zeros((data.n_items, data.n_items), dtype=torch.float32)
    for lo in range(0, data.n_users, batch):
        x = data.dense(np.arange(lo, min(lo + batch, data.n_users)))
        g += x.T @ x
    return g


def recommend(scorer: Scorer, seen: Interactions, users: np.ndarray, n: int, batch: int = 1024) -> np.ndarray:
    """(len(users), min(n, n_items)) top lists of unseen items, -1 where a user has fewer.

    Items scored ``-inf`` (unknown to the method) are never recommended.
    """
    k = min(n, seen.n_items)
    out = np.full((len(users), k), -1, dtype=np.int64)
    for lo in range(0, len(users), batch):
        rows = users[lo : lo + batch]
        values = np.ascontiguousarray(scorer(rows), dtype=np.float32)
        if not values.flags.writeable:  # top_n_unseen masks seen films in place
            values = values.copy()
        scores = torch.from_numpy(values)
        s = seen.seen(rows)
        seen_rows = torch.from_numpy(np.repeat(np.arange(len(rows)), np.diff(s.indptr)))
        films, _, count = top_n_unseen(scores, seen_rows, torch.from_numpy(s.indices), k)
        films[np.arange(k)[None, :] >= count[:, None]] = -1
        out[lo : lo + len(rows)] = films
    return out


class Baseline:
    """A method: a grid of parameters and a ``fit`` returning a scorer."""

    name = "baseline"

    def grid(self) -> list[dict]:
        return [{}]

    def fit(self, data: Interactions, params: dict) -> Scorer:
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

    def fit(self, data: Interactions, params: dict) -> Scorer:
        counts = data.feedback(params.get("feedback", "all")).item_counts().astype(np.float32)
        return lambda rows: np.repeat(counts[None, :], len(rows), axis=0)


class EASE(Baseline):
    """EASE (Steck 2019): B = I - P diag(1/diag P), P = (X^T X + lambda I)^-1, on binary X.

    With fewer users than items, P comes from the Woodbury identity
    P = (I - X^T (X X^T + lambda I)^-1 X) / lambda, and the users x users kernel is
    eigendecomposed once per training matrix so every lambda of the grid is cheap. The
    scores ``X_u B = X_u - (X_u P) / diag(P)`` never need B itself.
    """

    name = "ease"

    def __init__(self, lambdas: tuple[float, ...] = (50.0, 100.0, 200.0, 400.0, 800.0, 1600.0),
                 feedback: tuple[str, ...] = FEEDBACK):  # fmt: skip
        self.lambdas, self.feedbacks = lambdas, feedback
        self._cache: tuple[int, object] | None = None

    def grid(self) -> list[dict]:  # feedback outermost: one decomposition per feedback
        return [{"feedback": f, "lambda": float(lam)} for f in self.feedbacks for lam in self.lambdas]

    def _prepared(self, data: Interactions):
        if self._cache is None or self._cache[0] != id(data):
            if data.n_users < data.n_items:
                x = data.dense(np.arange(data.n_users), torch.float64)
                s, v = torch.linalg.eigh(x @ x.T)
                prepared = ("dual", x, s.clamp(min=0), v)
            else:
                prepared = ("primal", gram(data).double())
            self._cache = (id(data), prepared)
        return self._cache[1]

    def fit(self, data: Interactions, params: dict) -> Scorer:
        lam = params["lambda"]
        data = data.feedback(params.get("feedback", "all"))
        prep = self._prepared(data)
        if prep[0] == "dual":
            _, x, s, v = prep
            vx = v.T @ x  # (users, items)
            k_inv_x = v @ (vx / (s + lam)[:, None])  # (X X^T + lambda I)^-1 X
            diag_p = (1.0 - (x * k_inv_x).sum(dim=0)) / lam

            def scores(rows: np.ndarray) -> np.ndarray:
                xu = x[torch.from_numpy(rows)]
                xp = (xu - (xu @ x.T) @ k_inv_x) / lam
                return (xu - xp / diag_p).float().numpy()

            return scores
        g = prep[1]
        p = torch.linalg.inv(g + lam * torch.eye(data.n_items, dtype=g.dtype))
        diag_p = torch.diagonal(p).clone()

        def primal_scores(rows: np.ndarray) -> np.ndarray:
            xu = data.dense(rows, torch.float64)
            return (xu - (xu @ p) / diag_p).float().numpy()

        return primal_scores

    def close(self) -> None:
        self._cache = None


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

    def _neighbours(self, data: Interactions) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, rows) of each column's max(ks) most similar items, best first."""
        if self._cache is None or self._cache[0] != id(data):
            g = gram(data)
            norms = torch.sqrt(torch.diagonal(g)).clone()
            sim = g / (norms[:, None] * norms[None, :] + self.shrink + 1e-12)
            sim.fill_diagonal_(0.0)
            k = min(max(self.ks), data.n_items)
            values, rows = torch.topk(sim, k, dim=0)
            self._cache = (id(data), values, rows)
        return self._cache[1], self._cache[2]

    def fit(self, data: Interactions, params: dict) -> Scorer:
        data = data.feedback(params.get("feedback", "all"))
        values, rows = self._neighbours(data)
        k = min(params["k"], values.shape[0])
        sim = torch.zeros((data.n_items, data.n_items), dtype=torch.float32)
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

    def _frame(self, data: Interactions):
        """The interactions as a Spark DataFrame, via parquet (no driver-side pickling)."""
        if id(data) not in self._frames:
            path = self.work_dir / f"als_input_{len(self._frames)}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame({
                "user": data.rows.astype(np.int32),
                "item": data.indices.astype(np.int32),
                "rating": (np.ones_like(data.ratings) if self.implicit else data.ratings).astype(np.float32),
            }).to_parquet(path, index=False)  # fmt: skip
            self._frames[id(data)] = self.spark.read.parquet(str(path)).cache()
        return self._frames[id(data)]

    def fit(self, data: Interactions, params: dict) -> Scorer:
        from pyspark.ml.recommendation import ALS

        data = data.feedback(params.get("feedback", "all"))
        blocks = max(1, min(8, self.spark.sparkContext.defaultParallelism))
        als = ALS(rank=params["rank"], regParam=params["regParam"], alpha=params.get("alpha", 1.0),
                  implicitPrefs=self.implicit, maxIter=self.max_iter, seed=self.seed,
                  numUserBlocks=blocks, numItemBlocks=blocks,
                  userCol="user", itemCol="item", ratingCol="rating")  # fmt: skip
        model = als.fit(self._frame(data))
        user_f = _factors(model.userFactors.toPandas(), data.n_users, params["rank"])
        items = model.itemFactors.toPandas()
        item_f = _factors(items, data.n_items, params["rank"])
        known = np.zeros(data.n_items, dtype=bool)
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
    method: Baseline, train: Interactions, users: np.ndarray, n: int, inner: InnerSplit | None = None
) -> BaselineResult:
    """Tune on ``inner`` (when the grid has more than one point), fit on ``train``, recommend."""
    t0 = time.monotonic()
    grid = method.grid()
    results: list[dict] = []
    best = grid[0]
    if inner is not None and len(grid) > 1 and len(inner.users):
        best_value = -np.inf
        for params in grid:
            top = recommend(method.fit(inner.train, params), inner.train, inner.users, 10)
            value = ranking_metrics(top, inner.relevant, {TUNE_METRIC: 10})[TUNE_METRIC]
            results.append({**params, f"inner_{TUNE_METRIC}": round(value, 5)})
            log.info("%s %s: inner %s %.4f", method.name, params, TUNE_METRIC, value)
            if value > best_value:
                best, best_value = params, value
    t1 = time.monotonic()
    scorer = method.fit(train, best)
    t2 = time.monotonic()
    top = recommend(scorer, train, users, n)
    t3 = time.monotonic()
    method.close()
    seconds = {"tune": t1 - t0, "fit": t2 - t1, "recommend": t3 - t2, "total": t3 - t0}
    log.info("%s: params %s, %.1fs (tune %.1fs)", method.name, best, seconds["total"], seconds["tune"])
    return BaselineResult(method.name, top, dict(best), results, {k: round(v, 3) for k, v in seconds.items()})
