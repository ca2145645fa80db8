"""Time in a MovieLens-layout drop: taste drift within users, films' ratings after they
appear, how much of the watching is of new films, and what recency weighting gains.

    .venv/bin/python bench/data_time.py [DIR ...]      (default ../shared/data/ml-latest-small)

Prints one table, one column per drop. The measures:

- **drift**: users with >= 20 ratings, ordered by (timestamp, movieId) as the holdout orders
  them. Their tail (the evaluation's holdout: the last 20%) is compared with four equal
  blocks of the rest (Q1 oldest .. Q4 latest): cosine of genre-count vectors, and the
  Recall@20 of the tail by EASE (lambda 200, fitted on every user's non-tail ratings)
  scoring from that block alone (the user's other films excluded from the lists).
  "shuffled" redoes it with each user's ratings in a random order: the level without any
  order effect.
- **spread**: for films first rated at least a year after the data starts and a year
  before it ends (so the whole first year is seen), the share of their later ratings
  within 30 / 90 / 365 days of the first one; and, for films whose title year is inside
  the data, the share of ratings in the title year or the next.
- **new films**: the share of ratings (after the data's first year) on films first rated
  less than 365 days before, and on films whose title year is the rating's year or the
  one before.
- **activity**: ratings per user, users under 5, users whose ratings all lie within a day.
- **EASE vs recency-weighted EASE** on the evaluation's temporal holdout (both tuned on
  the inner split as in ``recsys evaluate``): NDCG@10 and Recall@20, and the gain.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

DAY = 86_400
YEAR = 365 * DAY
MIN_DRIFT_RATINGS = 20
BLOCKS = 4


def load(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    r = pd.read_csv(path / "ratings.csv")
    movies = pd.read_csv(path / "movies.csv")
    year = movies["title"].str.extract(r"\((\d{4})\)\s*$", expand=False)
    movies["year"] = pd.to_numeric(year, errors="coerce")
    return r, movies


def ordered(r: pd.DataFrame) -> pd.DataFrame:
    """Ratings by (user, time, movieId), with each one's position and its user's count."""
    r = r.sort_values(["userId", "timestamp", "movieId"], kind="stable").reset_index(drop=True)
    r["pos"] = r.groupby("userId").cumcount()
    r["n"] = r.groupby("userId")["movieId"].transform("size")
    return r


def _blocks(r: pd.DataFrame) -> pd.DataFrame:
    """Users with enough ratings; block 0..BLOCKS-1 = history quarters, BLOCKS = the tail."""
    r = r[r["n"] >= MIN_DRIFT_RATINGS].copy()
    tail = np.maximum(1, np.floor(r["n"] * 0.2 + 1e-9)).astype(int)
    hist = r["n"] - tail
    r["block"] = np.where(r["pos"] >= hist, BLOCKS, np.minimum(BLOCKS - 1, r["pos"] * BLOCKS // hist))
    return r


def _shuffle(r: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Each user's ratings in a random order (positions re-drawn, the rest kept)."""
    r = r.copy()
    r["_k"] = np.random.default_rng(seed).random(len(r))
    r = r.sort_values(["userId", "_k"]).reset_index(drop=True)
    r["pos"] = r.groupby("userId").cumcount()
    return r.drop(columns="_k")


def drift(r: pd.DataFrame, movies: pd.DataFrame) -> dict[str, float]:
    """Genre and co-rating cosine of the tail to each history quarter (see the docstring)."""
    b = _blocks(r)
    users = np.unique(b["userId"])
    uix = np.searchsorted(users, b["userId"].to_numpy())
    films = np.unique(b["movieId"])
    fix = np.searchsorted(films, b["movieId"].to_numpy())
    blk = b["block"].to_numpy()
    out: dict[str, float] = {"users": float(len(users))}

    genres = movies.set_index("movieId")["genres"].reindex(films).fillna("").str.get_dummies("|")
    genres = genres.drop(columns=[c for c in genres if c.startswith("(")], errors="ignore").to_numpy(np.float64)
    vec = np.zeros((len(users), BLOCKS + 1, genres.shape[1]))
    np.add.at(vec, (uix, blk), genres[fix])
    norms = np.linalg.norm(vec, axis=2) + 1e-12
    for q in range(BLOCKS):
        cos = (vec[:, q] * vec[:, BLOCKS]).sum(axis=1) / (norms[:, q] * norms[:, BLOCKS])
        out[f"genre Q{q + 1}"] = float(cos.mean())

    # item-item (EASE, lambda 200, fitted on the non-tail ratings) from each quarter alone:
    # how many tail films its top 20 (history films excluded) finds
    from recsys_core.data.csr import RatingsCSR
    from recsys_core.evaluation.baselines_linear import PrecisionSolver, dropout_penalty

    hist = blk < BLOCKS
    data = RatingsCSR.from_entries(uix[hist], fix[hist], len(users), len(films))
    solver = PrecisionSolver(data)
    prec = solver.solve(dropout_penalty(solver.counts, 200.0, 0.0))
    tail = RatingsCSR.from_entries(uix[~hist], fix[~hist], len(users), len(films))
    n_tail = torch.from_numpy(tail.counts).clamp(max=20).to(torch.float64)
    for q in range(BLOCKS):
        part = RatingsCSR.from_entries(uix[blk == q], fix[blk == q], len(users), len(films))
        found = torch.zeros(len(users), dtype=torch.float64)
        for lo in range(0, len(users), 512):
            rows = np.arange(lo, min(lo + 512, len(users)))
            xu = part.dense(rows, torch.float64)
            scores = xu - prec.apply(xu) / prec.diag
            scores[data.dense(rows, torch.float64) > 0] = -torch.inf
            top = torch.topk(scores, min(20, len(films)), dim=1).indices
            found[lo : lo + len(rows)] = torch.gather(tail.dense(rows, torch.float64), 1, top).sum(dim=1)
        out[f"EASE recall Q{q + 1}"] = float((found / n_tail).mean())
    return out


def spread(r: pd.DataFrame, movies: pd.DataFrame) -> dict[str, float]:
    t0, t1 = int(r["timestamp"].min()), int(r["timestamp"].max())
    first = r.groupby("movieId")["timestamp"].transform("min")
    age = (r["timestamp"] - first) / DAY
    film_ok = (first >= t0 + YEAR) & (first <= t1 - YEAR)
    later = film_ok & (r["timestamp"] > first)
    out = {"films (first rated inside)": float(r.loc[film_ok, "movieId"].nunique())}
    for days in (30, 90, 365):
        out[f"later ratings <= {days} d after first"] = float((age[later] <= days).mean()) if later.any() else np.nan
    out["median days after first"] = float(age[later].median()) if later.any() else np.nan
    year = r["movieId"].map(movies.set_index("movieId")["year"])
    ryear = pd.to_datetime(r["timestamp"], unit="s").dt.year
    inside = year.between(pd.Timestamp(t0, unit="s").year + 1, pd.Timestamp(t1, unit="s").year - 1)
    lag = (ryear - year)[inside]
    out["ratings in title year or next"] = float(lag.between(0, 1).mean()) if inside.any() else np.nan
    out["ratings before the title year"] = float((lag < 0).mean()) if inside.any() else np.nan
    return out


def new_films(r: pd.DataFrame, movies: pd.DataFrame) -> dict[str, float]:
    t0 = int(r["timestamp"].min())
    first = r.groupby("movieId")["timestamp"].transform("min")
    after = r["timestamp"] >= t0 + YEAR
    year = r["movieId"].map(movies.set_index("movieId")["year"])
    ryear = pd.to_datetime(r["timestamp"], unit="s").dt.year
    recent = (r["timestamp"] - first) < YEAR
    repeat = r["timestamp"] > first  # not the film's own first rating
    return {
        "on films first rated < 1 y before": float(recent[after].mean()),
        "  same, not counting first ratings": float(recent[after & repeat].mean()),
        "on films titled this year or last": float((ryear - year).between(0, 1)[after].mean()),
    }


def activity(r: pd.DataFrame) -> dict[str, float]:
    per_user = r.groupby("userId")["timestamp"].agg(["size", "min", "max"])
    return {
        "ratings": float(len(r)),
        "users": float(len(per_user)),
        "films": float(r["movieId"].nunique()),
        "median ratings per user": float(per_user["size"].median()),
        "users with < 5 ratings": float((per_user["size"] < 5).mean()),
        "users within one day": float(((per_user["max"] - per_user["min"]) < DAY).mean()),
    }


def linear_gain(r: pd.DataFrame, max_tune_users: int = 5_000) -> dict[str, float]:
    """EASE and recency-weighted EASE on the evaluation's temporal holdout, tuned as there."""
    from recsys_core.evaluation import baselines, baselines_linear
    from recsys_core.evaluation.run import EvalIndex, inner_split
    from recsys_core.evaluation.split import temporal_holdout
    from recsys_core.ranking.holdout import HOLDOUT_FRACTION, MIN_HOLDOUT_RATINGS
    from recsys_core.ranking.metrics import ranking_metrics

    r = r[["userId", "movieId", "rating", "timestamp"]]
    train, held = temporal_holdout(r)
    index = EvalIndex(train, held, 4.0)
    split = SimpleNamespace(stats={"fraction": HOLDOUT_FRACTION, "min_ratings": MIN_HOLDOUT_RATINGS},
                            relevant_rating=4.0)  # fmt: skip
    inner = inner_split(train, index, split, 0, max_tune_users)
    data = baselines.ratings_csr(train, index.user_ids, index.catalog)
    out: dict[str, float] = {}
    for name, method in (("EASE", baselines_linear.EASE()), ("EASE recency", baselines_linear.ease_recency())):
        result = baselines.run_baseline(method, data, index.eval_rows, 20, inner)
        m = ranking_metrics(index.full_lists(result.top), index.relevant, {"ndcg@10": 10, "recall@20": 20})
        out[f"{name} NDCG@10"], out[f"{name} Recall@20"] = m["ndcg@10"], m["recall@20"]
        if "half_life" in result.params:
            out["half-life chosen (ratings)"] = float(result.params["half_life"])
    out["gain NDCG@10"] = out["EASE recency NDCG@10"] / out["EASE NDCG@10"] - 1
    out["gain Recall@20"] = out["EASE recency Recall@20"] / out["EASE Recall@20"] - 1
    return out


def measure(path: Path, gain: bool = True) -> dict[str, float]:
    raw, movies = load(path)
    r = ordered(raw)
    out: dict[str, float] = {}
    out.update(activity(r))
    d, s = drift(r, movies), drift(_shuffle(r), movies)
    out["drift users (>= 20 ratings)"] = d.pop("users")
    s.pop("users")
    for kind in ("genre", "EASE recall"):
        for q in range(1, BLOCKS + 1):
            out[f"tail ~ {kind} Q{q}"] = d[f"{kind} Q{q}"]
        out[f"tail ~ {kind} Q4 / Q1"] = d[f"{kind} Q4"] / d[f"{kind} Q1"]
        out[f"tail ~ {kind} shuffled Q4 / Q1"] = s[f"{kind} Q4"] / s[f"{kind} Q1"]
    out.update(spread(r, movies))
    out.update(new_films(r, movies))
    if gain:
        out.update(linear_gain(raw))
    return out


def _fmt(value: float) -> str:
    if np.isnan(value):
        return "-"
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.3f}"


def table(columns: dict[str, dict[str, float]]) -> str:
    names = list(columns)
    rows = list(dict.fromkeys(k for c in columns.values() for k in c))
    lines = ["| measure | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for row in rows:
        lines.append(f"| {row} | " + " | ".join(_fmt(columns[n].get(row, np.nan)) for n in names) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="*", type=Path, default=[Path("../shared/data/ml-latest-small")])
    parser.add_argument("--no-gain", action="store_true", help="skip the EASE / recency-weighted EASE fits")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    columns = {}
    for path in args.dirs:
        t = time.monotonic()
        columns[re.sub(r"^.*/", "", str(path).rstrip("/"))] = measure(path, gain=not args.no_gain)
        print(f"{path}: measured in {time.monotonic() - t:.0f}s", file=sys.stderr)
    print(table(columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
