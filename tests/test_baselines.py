"""The stronger baselines of issue 18: EDLAE / DLAE (Steck 2020), recency-weighted EASE and
EDLAE, and recent popularity; checked against numpy closed forms on small generated data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recsys_core.data.csr import LIKED_RATING, RatingsCSR
from recsys_core.evaluation import baselines
from recsys_core.evaluation import baselines_linear as linear
from recsys_core.evaluation.run import (
    DEFAULT_METHODS,
    METHOD_LABELS,
    EvalIndex,
    inner_split,
    make_baseline,
)
from recsys_core.evaluation.split import Split
from recsys_core.ranking.metrics import seen_leakage

DAY = 86_400
SHAPES = [(12, 30), (40, 15)]  # dual (users < films) and primal form


def _frame(n_users: int, n_films: int, seed: int = 0, density: float = 0.35) -> pd.DataFrame:
    """userId, movieId, rating, timestamp (days, with ties in time) of random users."""
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_films)) < density
    dense[:, 0] = True
    u, i = np.nonzero(dense)
    return pd.DataFrame({"userId": u + 1, "movieId": i + 1, "rating": rng.choice([2.0, 4.0, 5.0], len(u)),
                         "timestamp": rng.integers(0, 60, len(u)) * DAY})  # fmt: skip


def _data(n_users: int, n_films: int, seed: int = 0) -> RatingsCSR:
    frame = _frame(n_users, n_films, seed)
    return baselines.ratings_csr(frame, np.arange(1, n_users + 1), np.arange(1, n_films + 1))


def _binary(data: RatingsCSR, kind: str = "all") -> np.ndarray:
    part = baselines.feedback(data, kind)
    return part.dense(np.arange(part.n_users), torch.float64).numpy()


def _closed_form(x: np.ndarray, lam: float, p: float, constrained: bool) -> np.ndarray:
    """B of EDLAE (constrained) or DLAE, Steck 2020, by a plain numpy inverse."""
    g = x.T @ x
    penalty = np.diag(lam + p / (1 - p) * np.diag(g))
    if not constrained:
        return np.linalg.solve(g + penalty, g)
    prec = np.linalg.inv(g + penalty)
    return np.eye(len(g)) - prec / np.diag(prec)[None, :]


def _numpy_ages(data: RatingsCSR) -> np.ndarray:
    ages = np.empty(len(data.indices), dtype=np.int64)
    for u in range(data.n_users):
        lo, hi = data.indptr[u], data.indptr[u + 1]
        order = sorted(range(lo, hi), key=lambda e: (data.timestamps[e], data.indices[e]))
        for position, entry in enumerate(order):
            ages[entry] = (hi - lo) - 1 - position
    return ages


# ---------------------------------------------------------------- EDLAE / DLAE


@pytest.mark.parametrize("shape", SHAPES)
def test_edlae_with_p_zero_is_ease(shape):
    data = _data(*shape)
    rows = np.arange(data.n_users)
    for kind in ("all", "positive"):
        ease = linear.EASE().fit(data, {"feedback": kind, "lambda": 7.0})(rows)
        edlae = linear.edlae().fit(data, {"feedback": kind, "lambda": 7.0, "p": 0.0})(rows)
        np.testing.assert_array_equal(edlae, ease)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("p", "constrained"), [(0.0, True), (0.3, True), (0.0, False), (0.3, False)])
def test_edlae_and_dlae_match_the_closed_form(shape, p, constrained):
    data = _data(*shape, seed=1)
    method = linear.edlae() if constrained else linear.dlae()
    rows = np.array([0, 2, 5])
    for kind in ("all", "positive"):
        x = _binary(data, kind)
        scores = method.fit(data, {"feedback": kind, "lambda": 3.0, "p": p})(rows)
        expected = x[rows] @ _closed_form(x, 3.0, p, constrained)
        np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)


def test_penalty_and_parameters_are_checked():
    counts = torch.tensor([0.0, 2.0, 6.0])
    assert linear.dropout_penalty(counts, 5.0, 0.25).tolist() == pytest.approx([5.0, 5.0 + 2 / 3, 7.0])
    for lam, p in ((0.0, 0.1), (-1.0, 0.0), (1.0, 1.0), (1.0, -0.1)):
        with pytest.raises(ValueError):
            linear.dropout_penalty(counts, lam, p)
    with pytest.raises(ValueError, match="lambda"):
        linear.edlae().fit(_data(5, 8), {"feedback": "all", "lambda": 0.0, "p": 0.1})


@pytest.mark.parametrize("shape", SHAPES)
def test_a_scorer_stays_valid_after_later_fits(shape):
    data, rows = _data(*shape, seed=9), np.arange(6)
    method = linear.edlae()
    first = method.fit(data, {"feedback": "all", "lambda": 2.0, "p": 0.2})
    method.fit(data, {"feedback": "all", "lambda": 50.0, "p": 0.0})(rows)
    method.fit(data, {"feedback": "positive", "lambda": 2.0, "p": 0.2})(rows)
    fresh = linear.edlae().fit(data, {"feedback": "all", "lambda": 2.0, "p": 0.2})
    np.testing.assert_array_equal(first(rows), fresh(rows))


# ---------------------------------------------------------------- recency weighting


def test_rating_ages_count_back_from_the_latest_by_time_then_movie_id():
    # user 0: films 0..3 at times 30, 10, 30, 20 -> order 1, 3, 0, 2 (film 0 before film 2 at time 30)
    data = RatingsCSR.from_entries(np.array([0, 0, 0, 0, 1]), np.array([0, 1, 2, 3, 4]), 3, 5,
                                   timestamps=np.array([30, 10, 30, 20, 5]))  # fmt: skip
    assert linear.rating_ages(data).tolist() == [1, 3, 0, 2, 0]
    big = _data(30, 20, seed=4)
    np.testing.assert_array_equal(linear.rating_ages(big), _numpy_ages(big))
    assert linear.recency_weights(np.array([0, 1, 4]), 2.0).tolist() == pytest.approx([1.0, 0.5 ** 0.5, 0.25])
    assert linear.recency_weights(np.array([0, 50]), math.inf).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="half_life"):
        linear.recency_weights(np.array([0]), 0.0)


@pytest.mark.parametrize("shape", SHAPES)
def test_infinite_half_life_is_the_unweighted_model(shape):
    data = _data(*shape, seed=2)
    rows = np.arange(data.n_users)
    for kind in ("all", "positive"):
        plain = linear.EASE().fit(data, {"feedback": kind, "lambda": 4.0})(rows)
        decayed = linear.ease_recency().fit(data, {"feedback": kind, "lambda": 4.0, "half_life": math.inf})(rows)
        np.testing.assert_array_equal(decayed, plain)
        params = {"feedback": kind, "lambda": 4.0, "p": 0.2}
        plain = linear.edlae().fit(data, params)(rows)
        decayed = linear.edlae_recency().fit(data, {**params, "half_life": math.inf})(rows)
        np.testing.assert_array_equal(decayed, plain)


@pytest.mark.parametrize("shape", SHAPES)
def test_recency_weighted_rows_times_the_unweighted_weights(shape):
    data = _data(*shape, seed=3)
    rows = np.array([1, 4, 6])
    ages = _numpy_ages(data)  # over all of the user's ratings, whatever the feedback
    for kind in ("all", "positive"):
        x = _binary(data, kind)
        keep = np.ones(len(ages), bool) if kind == "all" else data.ratings >= LIKED_RATING
        weighted = np.zeros_like(x)
        weighted[data.entry_rows()[keep], data.indices[keep]] = 0.5 ** (ages[keep] / 3.0)
        params = {"feedback": kind, "lambda": 2.0, "p": 0.25, "half_life": 3.0}
        scores = linear.edlae_recency().fit(data, params)(rows)
        expected = weighted[rows] @ _closed_form(x, 2.0, 0.25, True)
        np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)


def test_decay_needs_timestamps():
    frame = _frame(6, 10).drop(columns="timestamp")
    data = baselines.ratings_csr(frame, np.arange(1, 7), np.arange(1, 11))
    linear.ease_recency().fit(data, {"feedback": "all", "lambda": 1.0, "half_life": math.inf})  # no decay: fine
    with pytest.raises(ValueError, match="timestamps"):
        linear.ease_recency().fit(data, {"feedback": "all", "lambda": 1.0, "half_life": 10.0})
    with pytest.raises(ValueError, match="timestamps"):
        baselines.PopularityRecent().fit(data, {"window_days": 7.0})


# ---------------------------------------------------------------- recent popularity


def test_infinite_window_is_liked_popularity():
    data = _data(25, 18, seed=5)
    rows = np.arange(25)
    recent = baselines.PopularityRecent().fit(data, {"window_days": math.inf})
    liked = baselines.Popularity().fit(data, {"feedback": "positive"})
    np.testing.assert_array_equal(recent(rows), liked(rows))
    np.testing.assert_array_equal(baselines.recommend(recent, data, rows, 10), baselines.recommend(liked, data, rows, 10))


def test_recent_window_counts_likes_before_the_cut_with_movie_id_ties():
    # cut = day 100: a 10-day window keeps likes at days >= 90
    entries = [  # (user, film, rating, day)
        (0, 0, 5.0, 100), (1, 0, 4.0, 50), (2, 0, 4.5, 10),  # film 0: 3 likes, 1 recent
        (0, 1, 4.0, 95), (1, 1, 5.0, 90),  # film 1: 2 recent likes
        (2, 2, 4.0, 99), (3, 2, 2.0, 99),  # film 2: 1 recent like (and a recent dislike)
        (3, 3, 4.0, 92),  # film 3: 1 recent like, ties film 0 and 2
    ]  # fmt: skip
    u, f, r, t = (np.array(c) for c in zip(*entries, strict=True))
    data = RatingsCSR.from_entries(u, f, 5, 5, r, t * DAY)
    scorer = baselines.PopularityRecent().fit(data, {"window_days": 10.0})
    assert scorer(np.array([4]))[0].tolist() == [1.0, 2.0, 1.0, 1.0, 0.0]
    assert baselines.recommend(scorer, data, np.array([4]), 5)[0].tolist() == [1, 0, 2, 3, 4]
    with pytest.raises(ValueError, match="window_days"):
        baselines.PopularityRecent().fit(data, {"window_days": 0.0})


# ---------------------------------------------------------------- tuning and the evaluation's wiring


def test_new_baselines_tune_recommend_unseen_and_refine_the_decay():
    data, inner_train = _data(30, 25, seed=6), _data(30, 25, seed=7)
    inner = baselines.InnerSplit(inner_train, np.arange(12), RatingsCSR.from_lists([[3, 5]] * 12, 25))
    users = np.arange(30)
    small = {"lambdas": (1.0, 10.0, 100.0), "feedback": ("all",)}
    methods = [baselines.PopularityRecent(), linear.edlae(dropouts=(0.0, 0.3), **small),
               linear.dlae(dropouts=(0.0, 0.3), **small), linear.ease_recency(half_lives=(2.0, 8.0, math.inf), **small),
               linear.edlae_recency(dropouts=(0.0, 0.3), half_lives=(2.0, math.inf), **small)]  # fmt: skip
    for method in methods:
        result = baselines.run_baseline(method, data, users, 12, inner)
        assert result.top.shape == (30, 12) and seen_leakage(result.top, data.select_rows(users)) == 0, method.name
        assert (result.top >= 0).sum(axis=1).tolist() == np.minimum(12, 25 - data.counts).tolist()
        tried = [{k: v for k, v in g.items() if not k.startswith("inner_")} for g in result.grid]
        assert result.params in tried and all(p in tried for p in method.grid())
        assert len(tried) == len({tuple(sorted(p.items())) for p in tried})  # nothing scored twice
    # recency: stage 1 without decay, then every half-life around the best lambda
    ease_rec = linear.ease_recency(half_lives=(2.0, 8.0, math.inf), **small)
    assert all(p["half_life"] == math.inf for p in ease_rec.grid()) and len(ease_rec.grid()) == 3
    scored = [(p, {10.0: 0.3}.get(p["lambda"], 0.1)) for p in ease_rec.grid()]
    extra = ease_rec.refine(scored)
    assert {(p["lambda"], p["half_life"]) for p in extra} == {(lam, h) for lam in (1.0, 10.0, 100.0)
                                                              for h in (2.0, 8.0, math.inf)}  # fmt: skip
    scored = [(p, {1.0: 0.3}.get(p["lambda"], 0.1)) for p in ease_rec.grid()]
    assert {p["lambda"] for p in ease_rec.refine(scored)} == {1.0, 10.0}
    assert linear.edlae().refine(scored) == []


def test_registered_in_the_evaluation(tmp_path):
    for name in ("popularity_recent", "edlae", "dlae", "ease_recency", "edlae_recency"):
        assert name in DEFAULT_METHODS and name in METHOD_LABELS
        method = make_baseline(name, None, tmp_path, 1, {})
        assert method.name == name and len(method.grid()) > 1
    custom = make_baseline("edlae_recency", None, tmp_path, 1, {"edlae_recency": {"half_lives": (4.0, math.inf)}})
    assert custom.half_lives == (4.0, math.inf)


def test_training_csrs_of_the_evaluation_carry_timestamps():
    train = _frame(20, 12, seed=8)
    train["timestamp"] += np.arange(len(train))  # distinct times
    heldout = train.iloc[:0]
    index = EvalIndex(train, heldout, LIKED_RATING)
    outer = baselines.ratings_csr(train, index.user_ids, index.catalog)
    expected = train.sort_values(["userId", "movieId"])["timestamp"].to_numpy()
    np.testing.assert_array_equal(outer.timestamps, expected)
    split = Split(Path("unused"), train, heldout, LIKED_RATING, {"fraction": 0.2, "min_ratings": 5})
    inner = inner_split(train, index, split, seed=1, max_users=100)
    by_pair = dict(zip(zip(train["userId"], train["movieId"], strict=True), train["timestamp"], strict=True))
    pairs = zip(index.user_ids[inner.train.entry_rows()], index.catalog[inner.train.indices], strict=True)
    assert inner.train.timestamps.tolist() == [by_pair[pair] for pair in pairs]
    assert len(inner.train.indices) < len(train) and inner.train.timestamps.any()
