"""The temporal signal in the model: the item-item term's input chosen on validation (liked or
all ratings, EASE or EDLAE penalty) and weighted toward each user's latest ratings, the same
in training, local scoring and Spark scoring."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from recsys_core.data.csr import RatingsCSR
from recsys_core.data.features import load_features
from recsys_core.data.recency import entry_ages, rating_ages
from recsys_core.models import UserAE, UserAEConfig
from recsys_core.models.ease import dropout_penalty, ease_weights, precision_matrix
from recsys_core.models.recent_popularity import BIN_SECONDS, LikeCounts, RecentPopularity
from recsys_core.models.user_ae import user_batch
from recsys_core.paths import Warehouse
from recsys_core.scoring.score import ScoreConfig, run_scoring
from recsys_core.training import artifacts
from recsys_core.training.blend import choose_blend
from recsys_core.training.config import TrainConfig
from recsys_core.training.item_item import ItemItemConfig, ItemItemPoint, fit_item_item
from recsys_core.training.item_search import SearchCost, search_item_item
from recsys_core.training.train import run_training
from recsys_core.training.validation import model_metrics, split_validation

from .test_training import DS, TINY, write_tiny_features

torch.set_num_threads(1)
CPU = torch.device("cpu")


def csr_of(users: list[list[tuple[int, float, int]]], n_films: int) -> RatingsCSR:
    """A CSR from per-user (film, stars, timestamp) lists."""
    counts = np.array([len(u) for u in users])
    flat = [entry for u in users for entry in u]
    return RatingsCSR(
        np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        np.array([f for f, _, _ in flat], dtype=np.int64), np.array([r for _, r, _ in flat], dtype=np.float32),
        np.array([t for _, _, t in flat], dtype=np.int64), n_films,
    )  # fmt: skip


def test_edlae_weights_are_each_films_regression_with_the_dropout_penalty():
    """EDLAE (Steck 2020): column j regresses film j on the others with penalty
    lambda + p / (1 - p) * count_i on film i; p = 0 is EASE."""
    rng = np.random.default_rng(3)
    x = torch.from_numpy((rng.random((40, 8)) < 0.4).astype(np.float64))
    g, lam, p = x.T @ x, 2.0, 0.25
    b = ease_weights(g.float(), lam, p).double()
    penalty = dropout_penalty(torch.diagonal(g), lam, p)
    for j in range(8):
        others = [i for i in range(8) if i != j]
        reference = torch.linalg.solve(g[others][:, others] + torch.diag(penalty[others]), g[others, j])
        torch.testing.assert_close(b[others, j], reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ease_weights(g.float(), lam, 0.0), ease_weights(g.float(), lam))
    assert not torch.allclose(ease_weights(g.float(), lam, 0.5), ease_weights(g.float(), lam))


def test_precision_matrix_leaves_the_gram_as_it_was():
    """The search solves one Gram for many penalties: no solve may change it (in float32 the
    penalty goes onto the Gram's own diagonal and must be taken off again)."""
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((20, 6)).astype(np.float32))
    g = x.T @ x
    before = g.clone()
    p32 = precision_matrix(g, torch.linspace(1.0, 2.0, 6, dtype=torch.float64), torch.float32)
    assert torch.equal(g, before)
    torch.testing.assert_close(p32 @ (before + torch.diag(torch.linspace(1.0, 2.0, 6))), torch.eye(6), atol=1e-4, rtol=0)
    ease_weights(g, 3.0, 0.4)
    assert torch.equal(g, before)


def test_batch_ages_follow_each_users_rating_order():
    csr = csr_of([[(3, 4.0, 50), (1, 3.0, 10), (2, 5.0, 50)], [], [(0, 1.0, 7), (4, 4.5, 5)]], n_films=5)
    assert rating_ages(csr).tolist() == [0, 2, 1, 0, 1]  # a tie in time: the higher film index is later
    batch = user_batch(csr, np.array([2, 0]))
    assert batch.ages.tolist() == [0, 1, 0, 2, 1]
    assert batch.ratings.tolist() == [1.0, 4.5, 4.0, 3.0, 5.0]
    with pytest.raises(ValueError, match="differ in length"):
        entry_ages(np.zeros(2, np.int64), np.zeros(2, np.int64), np.zeros(3, np.int64))


def pair_users(n_users: int, seed: int, liked_share: float) -> RatingsCSR:
    """Films in 10 pairs: each user rates both films of 3 pairs, the latest rating 5 stars and
    the others 5 stars with probability ``liked_share`` (else 3)."""
    rng = np.random.default_rng(seed)
    users = []
    for _ in range(n_users):
        pairs = rng.choice(10, 3, replace=False)
        films = [int(f) for pair in pairs for f in (2 * pair, 2 * pair + 1)]
        stars = [5.0 if rng.random() < liked_share else 3.0 for _ in films[:-1]] + [5.0]
        users.append([(f, s, 100 + t) for t, (f, s) in enumerate(zip(films, stars))])
    return csr_of(users, 20)


def test_the_search_takes_every_rating_as_input_when_likes_are_rare():
    """With almost no liked ratings before the hidden one, a term fed liked ratings has no
    input; the search must find that the term fed every rating predicts the hidden film."""
    csr = pair_users(300, 0, liked_share=0.02)
    train, validation = split_validation(csr, 100, seed=1)
    config = replace(TrainConfig(), item=ItemItemConfig(l2s=(), dropouts=()), max_minutes=10)
    config.user.item_neighbours = 5
    search = search_item_item(train, validation, config, CPU)
    assert [row["feedback"] for row in search.tried] == ["liked", "all"]
    assert search.best.point == ItemItemPoint("all", 200.0, 0.0)
    assert search.tried[1]["ndcg@10"] > search.tried[0]["ndcg@10"] + 0.3
    assert search.metrics["ndcg@10"] == search.tried[1]["ndcg@10"] and not search.stopped_early

    liked = search_item_item(train, validation, replace(config, item=ItemItemConfig(feedbacks=("liked",),
                                                                                     l2s=(), dropouts=())), CPU)  # fmt: skip
    assert liked.best.point.feedback == "liked"


def test_the_search_skips_every_point_past_its_time_budget():
    csr = pair_users(200, 1, liked_share=0.5)
    train, validation = split_validation(csr, 100, seed=1)
    config = replace(TrainConfig(), item=ItemItemConfig(search_share=0.0))
    search = search_item_item(train, validation, config, CPU)
    assert len(search.tried) == 1 and search.stopped_early  # the first point always runs
    whole = search_item_item(train, validation, replace(config, item=ItemItemConfig()), CPU)
    assert len(whole.tried) == 2 + 2 + 3 * 2 and not whole.stopped_early  # feedbacks, lambdas, dropouts x 2


def test_the_search_skips_a_point_over_budget_and_goes_on_with_cheaper_ones():
    """20 liked films, 1,500 films rated at all: the every-rating point's predicted fit is
    (1500/20)^3 = 420,000x the first one's and passes any budget, so it is skipped, while the
    lambdas on the liked Gram already built still run (a search that stopped at the first
    point over budget tried only one point)."""
    rng = np.random.default_rng(5)
    users = []
    for _ in range(300):
        liked = [(int(f), 5.0, 200 + t) for t, f in enumerate(rng.choice(20, 3, replace=False))]
        low = [(int(f), 2.0, 100 + t) for t, f in enumerate(rng.choice(np.arange(20, 1520), 40, replace=False))]
        users.append(low + liked)
    train, validation = split_validation(csr_of(users, 1520), 100, seed=1)
    config = replace(TrainConfig(), item=ItemItemConfig(dropouts=()), max_minutes=1.0)  # a budget of 18 s
    config.user.item_neighbours = 5
    search = search_item_item(train, validation, config, CPU)
    assert [(row["feedback"], row["l2"]) for row in search.tried] == [("liked", 200.0), ("liked", 50.0), ("liked", 800.0)]
    assert search.stopped_early and [(p["feedback"], p["l2"]) for p in search.skipped] == [("all", 200.0)]
    skip = search.skipped[0]
    assert skip["budget_seconds"] == 18.0 and skip["spent_seconds"] + skip["predicted_seconds"] > 18
    assert search.summary()["skipped"] == search.skipped


def test_the_search_cost_counts_the_gram_a_point_must_build_and_the_cubic_fit():
    """The skip rule's prediction (issue 15: the old rule ignored the next Gram and overran
    its budget by 20% at full scale): Gram seconds scale with input entries, fit seconds
    with films cubed, and a point on an already built Gram pays no Gram."""
    cost = SearchCost()
    cost.saw_gram(17.0, 13_500_000)  # the liked Gram at full scale
    cost.saw_fit(72.0, 20_000, 3.0)  # its fit, then its validation
    assert cost.predict(20_000, 0) == pytest.approx(75.0)  # another lambda on the same Gram
    assert cost.predict(20_000, 27_000_000) == pytest.approx(34.0 + 75.0)  # every rating: a new Gram first
    assert cost.predict(10_000, 0) == pytest.approx(9.0 + 3.0)  # half the films: an eighth of the fit
    cost.saw_fit(10.0, 20_000, 1.0)  # a faster fit does not lower the rates (the slowest seen)
    assert cost.predict(20_000, 0) == pytest.approx(75.0)
    assert SearchCost().predict(20_000, 27_000_000) == 0.0  # nothing measured: the first point runs


def drifting_users(n_users: int, seed: int) -> RatingsCSR:
    """Films in 8 groups of 6: each user rates 5 films of one group, later 3 of another; the
    last of them is the one validation hides. Only the latest ratings tell which group."""
    rng = np.random.default_rng(seed)
    users = []
    for _ in range(n_users):
        old, new = rng.choice(8, 2, replace=False)
        films = [int(6 * old + f) for f in rng.choice(6, 5, replace=False)]
        films += [int(6 * new + f) for f in rng.choice(6, 3, replace=False)]
        users.append([(f, 5.0, 1000 + 10 * t) for t, f in enumerate(films)])
    return csr_of(users, 48)


def test_the_blend_search_weights_the_input_toward_the_latest_ratings_when_that_wins():
    csr = drifting_users(400, 0)
    train, validation = split_validation(csr, 200, seed=2)
    config = replace(TrainConfig(), item=ItemItemConfig(l2=20.0, blends=(0.0, 1.0, 10.0), half_lives=(1.0, 100.0)))
    config.user = UserAEConfig(item_neighbours=47)
    torch.manual_seed(0)
    model = UserAE(48, None, config.user)
    fit = fit_item_item(train, 47, config.item, 4.0, CPU, ItemItemPoint("liked", 20.0, 0.0))
    ae = model_metrics(model, train, validation, config.top_n, 256, CPU, False)
    summary, metrics, _ = choose_blend(model, [fit], ae, train, validation, config, CPU, False)
    no_decay = max(row["ndcg@10"] for row in summary["grid"] if row["half_life"] is None)
    assert summary["half_life"] == 1.0 and model.config.item_half_life == 1.0
    assert metrics["ndcg@10"] > no_decay + 0.05
    assert metrics == model_metrics(model, train, validation, config.top_n, 256, CPU, False)  # the model keeps it


@pytest.fixture(scope="module")
def decayed(tmp_path_factory) -> Warehouse:
    """A trained tiny warehouse whose model's term (blend 5, the only one allowed) weighs every
    rating as input with a 2-rating half-life (set in the manifest scoring rebuilds it from)."""
    wh = write_tiny_features(tmp_path_factory.mktemp("recency") / "wh")
    run = run_training(wh, DS, replace(TINY, item=ItemItemConfig(blends=(5.0,), half_lives=(2.0,))))
    assert run.user_model.item_item.active
    manifest = json.loads((Path(wh.models(DS)) / artifacts.MANIFEST).read_text())
    manifest["config"]["user"].update(item_half_life=2.0, item_feedback="all")
    (Path(wh.models(DS)) / artifacts.MANIFEST).write_text(json.dumps(manifest))
    return wh


def scored_rows(wh: Warehouse) -> dict:
    table = pq.read_table(wh.recommendations_staging(DS))
    columns = (table.column(c).to_pylist() for c in ("user_id", "rank", "movie_id", "score"))
    return {(u, r): (m, s) for u, r, m, s in zip(*columns)}


def test_scoring_weighs_the_term_input_by_the_models_half_life(decayed, spark):
    """Local and Spark scoring rebuild the half-life and input from the manifest, and score
    exactly what the model computes on batches with the users' timestamps."""
    from recsys_core.scoring.spark_scoring import run_spark_scoring

    config = ScoreConfig(top_n=10, device="cpu", min_user_films=1)
    run_scoring(decayed, DS, config)
    local = scored_rows(decayed)
    run_spark_scoring(spark, decayed, DS, config)
    assert scored_rows(decayed) == local

    features = load_features(decayed.features(DS))
    user = artifacts.load_models(decayed.models(DS), features.manifest).user
    assert user.config.item_half_life == 2.0 and user.config.item_feedback == "all" and user.item_item.active
    csr = features.users.csr
    rows = np.flatnonzero(csr.counts >= 3)[:20]
    with torch.no_grad():
        scores = user(user_batch(csr, rows)).numpy()
        decay, user.config = user.config, replace(user.config, item_half_life=None)
        plain = user(user_batch(csr, rows)).numpy()
        user.config = decay
    assert not np.allclose(scores, plain)  # the decay changes the scores
    for i, row in enumerate(rows):
        movie, score = local[(int(features.users.user_ids[row]), 1)]
        film = int(np.flatnonzero(features.films.movie_ids == movie)[0])
        assert score == pytest.approx(float(scores[i, film]), rel=1e-5, abs=1e-6)


def test_recent_popularity_adds_the_window_likes_at_each_users_time_and_loads_any_size():
    month = BIN_SECONDS
    # film 0 liked in month 0, film 1 in months 0 and 2, film 2 in month 3 (3 stars: not a like)
    csr = csr_of([[(0, 5.0, 10), (1, 4.0, 20)], [(1, 4.5, 2 * month + 5)], [(2, 3.0, 3 * month + 1)]], n_films=3)
    counts = LikeCounts(csr, 4.0)
    assert counts.n_bins == 4 and counts.window(np.array([0, 2, 3]), 1).tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    assert counts.window(np.array([2, 3]), 3).tolist() == [[1, 2, 0], [0, 1, 0]]
    term = RecentPopularity()
    term.set(counts, 3, 2.0)
    last_times = torch.tensor([20, 2 * month + 5, 3 * month + 1, 99 * month])  # the last: after the data (clipped)
    scores = term.add_to(torch.zeros(4, 3), last_times)
    expected = 2.0 * np.log1p(counts.window(counts.bins_of(last_times.numpy()), 3)).astype(np.float32)
    torch.testing.assert_close(scores, torch.from_numpy(expected))
    fresh = RecentPopularity()
    fresh.load_state_dict(term.state_dict())  # the buffers take the stored sizes
    assert fresh.active and int(fresh.window) == 3
    torch.testing.assert_close(fresh.add_to(torch.zeros(4, 3), last_times), scores)
    batch = user_batch(csr, np.array([2, 0, 1]))
    assert batch.last_times.tolist() == [3 * month + 1, 20, 2 * month + 5]


def release_users(n_users: int, seed: int) -> RatingsCSR:
    """60 months, two new films a month: a user active in month m rates 6 random older films
    and, last, the two films of month m; nothing in the older films tells which month."""
    rng = np.random.default_rng(seed)
    users = []
    for _ in range(n_users):
        m = int(rng.integers(10, 60))
        t = m * BIN_SECONDS + 1000
        old = rng.choice(2 * m, 6, replace=False)
        entries = [(int(f), 5.0, t + i) for i, f in enumerate(old)]
        entries += [(2 * m, 5.0, t + 10), (2 * m + 1, 5.0, t + 11)]
        users.append(entries)
    return csr_of(users, 120)


def test_the_blend_search_turns_recent_popularity_on_when_the_users_time_predicts():
    csr = release_users(600, 0)
    train, validation = split_validation(csr, 300, seed=2)
    config = replace(TrainConfig(), item=ItemItemConfig(blends=(0.0, 1.0), half_lives=(4.0,)), recent_windows=(1, 12))
    config.user = UserAEConfig(item_neighbours=20)
    torch.manual_seed(0)
    model = UserAE(120, None, config.user)
    fit = fit_item_item(train, 20, config.item, 4.0, CPU)
    ae = model_metrics(model, train, validation, config.top_n, 256, CPU, False)
    summary, metrics, _ = choose_blend(model, [fit], ae, train, validation, config, CPU, False)
    off = max(row["ndcg@10"] for row in summary["grid"] if row["popularity"] == 0)
    assert summary["recent"]["window_bins"] == 1 and summary["recent"]["weight"] > 0
    assert metrics["ndcg@10"] > off + 0.2 and model.recent.active
    assert metrics == model_metrics(model, train, validation, config.top_n, 256, CPU, False)  # stored = searched


@pytest.mark.parametrize(("field", "value", "says"), [
    ("item_half_life", 0, "item_half_life must be a finite number > 0"),
    ("item_half_life", -3.0, "item_half_life must be a finite number > 0"),
    ("item_half_life", "abc", "item_half_life must be a finite number > 0"),
    ("item_feedback", "foo", "item_feedback must be one of"),
    ("liked_rating", 99, "liked_rating must be in"),
])  # fmt: skip
def test_scoring_refuses_a_manifest_with_term_settings_out_of_range(decayed, tmp_path, field, value, says):
    """A tampered manifest's settings are refused with the manifest named (they were dropped
    silently or scored into inf rows under the same model_version)."""
    from recsys_core.errors import CorruptFile

    wh = Warehouse(str(tmp_path / "wh"))
    for part in (decayed.features(DS), decayed.models(DS)):
        shutil.copytree(part, Path(wh.root) / Path(part).relative_to(decayed.root))
    path = Path(wh.models(DS)) / artifacts.MANIFEST
    manifest = json.loads(path.read_text())
    manifest["config"]["user"][field] = value
    path.write_text(json.dumps(manifest))
    with pytest.raises(CorruptFile, match=f"{path}.*{says}"):
        run_scoring(wh, DS, ScoreConfig(top_n=10, device="cpu"))
    with pytest.raises(CorruptFile, match=says):
        artifacts.check_user_config(manifest, str(path))


def test_training_without_liked_ratings_is_refused_naming_the_features(tmp_path):
    from recsys_core.errors import ConfigError, InputError

    wh = write_tiny_features(tmp_path / "wh")
    with pytest.raises(InputError, match="no user can validate the model"):
        run_training(wh, DS, replace(TINY, user=replace(TINY.user, liked_rating=5.0), min_val_ratings=10_000))
    with pytest.raises(ConfigError, match="--lr must be"):
        run_training(wh, DS, replace(TINY, lr=-1.0))
    with pytest.raises(ConfigError, match="--seed must be"):
        run_training(wh, DS, replace(TINY, seed=-5))


def test_the_gate_says_why_a_nan_validation_fails():
    from recsys_core.scoring.check import Report, check_model_quality

    report = Report(DS)
    check_model_quality(report, {"metrics": {"model": {"ndcg@10": float("nan")}, "popularity": {"ndcg@10": float("nan")}}}, 1.1)
    assert "no validation user had a liked rating" in report.failures["model_quality"]


def test_the_report_names_the_chosen_setting_not_the_first_row_with_its_blend():
    from recsys_core.evaluation.model_summary import item_item_sentence

    row = {"fit": 0, "blend": 20.0, "half_life": None, "window": 0, "popularity": 0.0, "ndcg@10": 0.11}
    grid = [{**row, "blend": 0.0, "ndcg@10": 0.10}, row, {**row, "fit": 1, "ndcg@10": 0.12},
            {**row, "fit": 1, "half_life": 10.0, "window": 3, "popularity": 0.5, "ndcg@10": 0.13}]  # fmt: skip
    item = {"fit": 1, "blend": 20.0, "half_life": 10.0, "recent": {"window_bins": 3, "bin_days": 30, "weight": 0.5},
            "feedback": "all", "l2": 50.0, "dropout": 0.25, "films": 1234, "neighbours": 200, "grid": grid,
            "search": {"seconds": 4.2}}  # fmt: skip
    text = item_item_sentence(item)
    assert "NDCG@10 0.1300" in text and "the AE alone 0.1000" in text
    assert "EDLAE on all ratings (λ 50, dropout 0.25)" in text and "half-life 10 ratings" in text
    assert "recent popularity 3 × 30 days, weight 0.5" in text and "search 4.2 s" in text
