"""Offline evaluation: metrics on hand-computed cases, the temporal split, the baselines,
and a whole evaluation on generated data (model vs popularity, no seen leakage, report)."""

from __future__ import annotations

import html
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from recsys_core.cli import build_parser
from recsys_core.data.csr import RatingsCSR
from recsys_core.evaluation import baselines, baselines_linear
from recsys_core.evaluation.report import write_report
from recsys_core.evaluation.run import METHOD_LABELS
from recsys_core.evaluation.split import split_drop, temporal_holdout
from recsys_core.ranking import metrics
from recsys_core.ranking.holdout import holdout_mask
from recsys_core.training.config import TrainConfig

PNG = b"\x89PNG\r\n\x1a\n"
D = [1 / math.log2(r + 2) for r in range(10)]  # DCG discounts of ranks 1..10


# ---------------------------------------------------------------- metrics


def test_ranking_metrics_by_hand():
    # user 0: relevant {1, 4}; user 1: relevant {9} (never recommended); user 2: nothing relevant
    relevant = RatingsCSR.from_lists([[4, 1], [9], []])
    top = np.array([[4, 0, 1], [0, 2, 3], [1, 2, -1]])
    ks = {"ndcg@2": 2, "ndcg@3": 3, "recall@2": 2, "recall@3": 3, "precision@3": 3, "map@3": 3,
          "hitrate@1": 1, "hitrate@3": 3}  # fmt: skip
    per: dict = {}
    m = metrics.ranking_metrics(top, relevant, ks, per)
    idcg2 = D[0] + D[1]
    assert m["ndcg@2"] == pytest.approx((D[0] / idcg2 + 0) / 2)  # user 2 cannot score: left out
    assert m["ndcg@3"] == pytest.approx(((D[0] + D[2]) / idcg2 + 0) / 2)
    assert m["recall@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["recall@3"] == pytest.approx((2 / 2 + 0) / 2)
    assert m["precision@3"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["map@3"] == pytest.approx(((1 / 1 + 2 / 3) / 2 + 0) / 2)
    assert m["hitrate@1"] == pytest.approx(0.5) and m["hitrate@3"] == pytest.approx(0.5)
    assert np.isnan(per["recall@3"][2]) and per["recall@3"][0] == pytest.approx(1.0)
    # the nightly validation figures are the same code
    wide = np.concatenate([top, np.full((3, 97), -1)], axis=1)
    nightly = metrics.validation_metrics(wide, relevant)
    assert nightly == metrics.ranking_metrics(wide, relevant, {"ndcg@10": 10, "recall@20": 20, "ndcg@100": 100})
    assert nightly["ndcg@10"] == pytest.approx(m["ndcg@3"])
    with pytest.raises(ValueError, match="needs top-4"):
        metrics.ranking_metrics(top, relevant, {"ndcg@4": 4})
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.ranking_metrics(top, relevant, {"auc@3": 3})


def test_normalization_by_min_k_relevant_and_padding():
    relevant = RatingsCSR.from_lists([list(range(30)), [5]])
    top = np.array([list(range(10)), [5] + [-1] * 9])
    m = metrics.ranking_metrics(top, relevant, {"recall@10": 10, "ndcg@10": 10, "precision@10": 10})
    assert m["recall@10"] == pytest.approx(1.0) and m["ndcg@10"] == pytest.approx(1.0)  # min(K, |rel|)
    assert m["precision@10"] == pytest.approx((1.0 + 0.1) / 2)
    # an empty list (all padding) never hits, even where item index -1 would "wrap"
    assert metrics.hits(np.array([[-1, -1]]), RatingsCSR.from_lists([[0]])).sum() == 0


def test_oracle_ranking_scores_one():
    rng = np.random.default_rng(0)
    lists = [sorted(rng.choice(200, size=rng.integers(1, 40), replace=False).tolist()) for _ in range(50)]
    relevant = RatingsCSR.from_lists(lists)
    top = np.full((50, 100), -1)
    for u, items in enumerate(lists):
        rest = [i for i in range(200) if i not in items]
        top[u] = (list(rng.permutation(items)) + rest)[:100]
    m = metrics.ranking_metrics(top, relevant, metrics.EVAL_KS)
    for name in ("ndcg@10", "ndcg@100", "recall@20", "recall@50", "map@10", "hitrate@10"):
        assert m[name] == pytest.approx(1.0), name
    n_rel = np.array([len(x) for x in lists])
    assert m["precision@10"] == pytest.approx(np.mean(np.minimum(n_rel, 10) / 10))


def test_beyond_accuracy_metrics():
    top = np.array([[0, 1, 2], [2, 3, -1], [-1, -1, -1]])
    seen = RatingsCSR.from_lists([[1, 7], [3], [0]])
    assert metrics.seen_leakage(top, seen) == 2  # user 0 film 1, user 1 film 3
    assert metrics.user_coverage(top) == pytest.approx(2 / 3)
    counts = np.array([10, 5, 5, 1, 0, 0])  # items 4 and 5: outside the catalog
    assert metrics.catalog_coverage(top, int((counts > 0).sum()), k=2) == pytest.approx(4 / 4)
    assert metrics.catalog_coverage(top, 4, k=1) == pytest.approx(2 / 4)
    pct = metrics.popularity_percentiles(counts)
    assert pct.tolist() == pytest.approx([1.0, 0.5, 0.5, 0.0, 0.0, 0.0])
    assert metrics.mean_popularity_percentile(top, pct, k=3) == pytest.approx((1 + 0.5 + 0.5 + 0.5 + 0) / 5)
    relevant = RatingsCSR.from_lists([[2], [], [4]])
    out = metrics.evaluate_top_lists(top, relevant, seen, counts)
    assert out["seen_leakage"] == 2 and out["users"] == 3 and out["scored_users"] == 2
    assert out["ndcg@10"] == pytest.approx((D[2] / D[0] + 0) / 2)
    assert out["recall@50"] == pytest.approx(0.5)  # short lists are padded to K


# ---------------------------------------------------------------- split


def test_holdout_mask_counts_and_order():
    # user 1: 10 ratings -> 2 held out; user 2: 4 ratings -> none; user 3: 7 -> floor(1.4) = 1
    users = np.array([1] * 10 + [2] * 4 + [3] * 7)
    movies = np.arange(len(users)) + 100
    ts = np.concatenate([np.arange(10), np.arange(4), np.arange(7)])
    mask = holdout_mask(users, movies, ts)
    assert mask[:10].sum() == 2 and mask[10:14].sum() == 0 and mask[14:].sum() == 1
    assert mask[8] and mask[9] and mask[20]
    # ties in time: the larger movieId counts as later
    mask = holdout_mask(np.array([1] * 5), np.array([50, 40, 30, 20, 10]), np.array([0, 1, 2, 3, 3]))
    assert mask.tolist() == [False, False, False, True, False]  # (3, 20) comes after (3, 10)
    frame = pd.DataFrame({"userId": users, "movieId": movies, "rating": 4.0, "timestamp": ts})
    train, held = temporal_holdout(frame)
    assert len(train) == 18 and sorted(held["movieId"]) == [108, 109, 120]


def _rows(user: int, films: list[int], ratings: list[float], times: list[int]) -> str:
    return "\n".join(f"{user},{f},{r},{t}" for f, r, t in zip(films, ratings, times, strict=True))


def test_split_drop_writes_a_training_drop(drop_factory, tmp_path):
    ratings = "\n".join([
        "userId,movieId,rating,timestamp",
        # user 1: 6 ratings -> the last one by (timestamp, movieId) held out: film 60 (ties film 50)
        _rows(1, [10, 20, 30, 40, 60, 50], [4.0, 3.0, 5.0, 2.0, 4.5, 1.0], [100, 200, 300, 400, 500, 500]),
        # user 2: 10 ratings -> 2 held out (films 19 and 20, rated 3.0 and 4.0)
        _rows(2, list(range(11, 21)), [3.0] * 9 + [4.0], list(range(1000, 1010))),
        # user 3: 4 ratings -> nothing held out
        _rows(3, [10, 20, 30, 40], [5.0] * 4, [10, 20, 30, 40]),
        "3,99,x,50",  # unparsable: passed to ingest (which quarantines it)
        "1,10,2.0,50",  # an older re-rating of (1, 10): dropped
    ])  # fmt: skip
    movies = "movieId,title,genres\n" + "\n".join(f"{m},Film {m} (2000),Drama" for m in range(10, 61))
    tags = 'userId,movieId,tag,timestamp\n1,60,"held out, dropped",510\n1,10,kept,110\n2,20,gone,1010\n'
    drop = drop_factory({"ratings.csv": ratings, "movies.csv": movies, "tags.csv": tags})
    split = split_drop(drop, tmp_path / "work")

    assert sorted(zip(split.heldout["userId"], split.heldout["movieId"], strict=True)) == [(1, 60), (2, 19), (2, 20)]
    assert sorted(zip(split.relevant["userId"], split.relevant["movieId"], strict=True)) == [(1, 60), (2, 20)]
    s = split.stats
    assert (s["ratings"], s["train_ratings"], s["heldout_ratings"]) == (20, 17, 3)
    assert (s["heldout_users"], s["evaluated_users"], s["tags_dropped"], s["tags_read"]) == (2, 2, 2, 3)
    assert (s["unreadable_rows_passed_to_ingest"], s["duplicate_ratings_dropped"]) == (1, 1)
    assert split.ds == "1970-01-01"

    out = split.train_dir
    assert (out / "movies.csv").read_bytes() == (drop / "movies.csv").read_bytes()
    written = pd.read_csv(out / "ratings.csv", dtype=str)
    assert len(written) == 18 and "x" in written["rating"].tolist()
    pairs = set(zip(written["userId"], written["movieId"], strict=True))
    assert ("1", "60") not in pairs and ("2", "20") not in pairs and ("1", "10") in pairs
    assert written[(written["userId"] == "1") & (written["movieId"] == "10")]["rating"].tolist() == ["4.0"]
    kept_tags = (out / "tags.csv").read_text()
    assert kept_tags.splitlines() == ["userId,movieId,tag,timestamp", "1,10,kept,110"]
    assert pd.read_parquet(tmp_path / "work" / "heldout.parquet").shape == (3, 4)


# ---------------------------------------------------------------- baselines


def _interactions(n_users: int, n_items: int, seed: int = 0, density: float = 0.3) -> RatingsCSR:
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < density
    dense[:, 0] = True  # item 0 rated by everybody: the most popular
    u, i = np.nonzero(dense)
    frame = pd.DataFrame({"userId": u + 1, "movieId": i + 1, "rating": rng.choice([2.0, 4.0, 5.0], len(u))})
    return baselines.ratings_csr(frame, np.arange(1, n_users + 1), np.arange(1, n_items + 1))


def _ease_closed_form(x: np.ndarray, lam: float) -> np.ndarray:
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return x @ b


@pytest.mark.parametrize("shape", [(12, 30), (40, 15)])  # dual (users < items) and primal form
def test_ease_matches_the_closed_form(shape):
    data = _interactions(*shape)
    x = data.dense(np.arange(data.n_users), torch.float64).numpy()
    ease = baselines_linear.EASE(lambdas=(5.0,), feedback=("all",))
    rows = np.array([0, 3, 7])
    scores = ease.fit(data, {"lambda": 5.0, "feedback": "all"})(rows)
    np.testing.assert_allclose(scores, _ease_closed_form(x, 5.0)[rows], rtol=1e-4, atol=1e-4)
    positive = baselines.feedback(data, "positive")
    assert len(positive.indices) == int((data.ratings >= 4.0).sum())
    xp = positive.dense(np.arange(data.n_users), torch.float64).numpy()
    scores = ease.fit(data, {"lambda": 5.0, "feedback": "positive"})(rows)
    np.testing.assert_allclose(scores, _ease_closed_form(xp, 5.0)[rows], rtol=1e-4, atol=1e-4)


def test_baselines_exclude_seen_and_tune_on_the_inner_split():
    data = _interactions(30, 25, seed=1)
    users = np.arange(30)
    seen = data.select_rows(users)
    inner = baselines.InnerSplit(_interactions(30, 25, seed=2), np.arange(10), RatingsCSR.from_lists([[3]] * 10))
    for method in (baselines.Popularity(), baselines_linear.EASE(lambdas=(1.0, 10.0)), baselines.ItemKNN(ks=(3, 10))):
        result = baselines.run_baseline(method, data, users, 12, inner)
        assert result.top.shape == (30, 12)
        assert metrics.seen_leakage(result.top, seen) == 0, method.name
        valid = result.top >= 0
        assert (valid.sum(axis=1) == np.minimum(12, 25 - np.diff(seen.indptr))).all()
        assert len(result.grid) == len(method.grid()) and result.params in method.grid()
        assert set(result.seconds) == {"tune", "fit", "recommend", "total"}
    # popularity: most rated unseen films first, ties by item index
    top = baselines.recommend(baselines.Popularity().fit(data, {}), data, np.array([0]), 5)[0]
    counts = data.film_counts()
    unseen = np.setdiff1d(np.arange(25), data.select_rows(np.array([0])).indices)
    assert top.tolist() == unseen[np.lexsort((unseen, -counts[unseen]))][:5].tolist()


@pytest.mark.slow
def test_spark_als_explicit_and_implicit(spark, tmp_path):
    data = _interactions(20, 15, seed=3)
    users = np.arange(20)
    for implicit in (False, True):
        grid = [{"rank": 2, "regParam": 0.1, "alpha": 1.0, "feedback": "positive" if implicit else "all"}]
        als = baselines.SparkALS(spark, tmp_path, implicit=implicit, grid=grid, max_iter=2, seed=1)
        result = baselines.run_baseline(als, data, users, 10)
        assert result.name == ("als_implicit" if implicit else "als_explicit")
        assert result.top.shape == (20, 10) and metrics.seen_leakage(result.top, data.select_rows(users)) == 0
        assert (result.top[:, 0] >= 0).all()


# ---------------------------------------------------------------- report and CLI


def _fake_results(methods: list[str]) -> dict:
    rng = np.random.default_rng(0)
    metric_names = [*metrics.EVAL_KS, "user_coverage", "catalog_coverage@10", "popularity_pct@10"]
    return {
        "data_dir": "/data", "seed": 1, "top_n": 100, "ds": "2018-09-30", "catalog_films": 50,
        "split": {"fraction": 0.2, "min_ratings": 5, "relevant_rating": 4.0, "rows_read": 10,
                  "unreadable_rows_passed_to_ingest": 0, "duplicate_ratings_dropped": 0, "ratings": 10, "users": 2,
                  "films": 5, "train_ratings": 8, "train_films": 5, "heldout_ratings": 2, "heldout_users": 2,
                  "relevant_heldout_ratings": 1, "evaluated_users": 1, "heldout_films_not_in_train": 0,
                  "tags_read": 0, "tags_dropped": 0, "first_rating": "2000-01-01T00:00:00",
                  "last_rating": "2001-01-01T00:00:00", "last_train_rating": "2001-01-01T00:00:00"},
        "methods": {m: {"label": METHOD_LABELS[m], "params": {}, "seconds": {"fit": 1.0, "total": 1.5},
                        "metrics": {**{k: float(rng.random()) for k in metric_names}, "seen_leakage": 0}}
                    for m in methods},
        "activity": {"labels": ["0-19", "20+"], "users": [3, 0],
                     "methods": {m: [float(rng.random()), None] for m in methods}},
        "model": {"history": [{"epoch": e, "loss": 5.0 - e, "ndcg@10": 0.1 * e, "recall@20": 0.1} for e in (1, 2)],
                  "best_epoch": 2, "epochs_run": 2, "metrics": {"popularity": {"ndcg@10": 0.05}}},
        "timings": {"total": 3.0},
    }  # fmt: skip


def _check_report(out, results: dict) -> None:
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for info in results["methods"].values():
        assert f"| {info['label']} |" in md
        assert f"<td>{html.escape(info['label'])}</td>" in page
    for name in ("metrics.png", "recall_by_activity.png", "popularity_bias.png", "training_curves.png"):
        assert (out / name).read_bytes()[:8] == PNG, name
        assert f"]({name})" in md and f'src="{name}"' in page


def test_report_renders_every_method_with_the_best_in_bold(tmp_path):
    results = _fake_results(list(METHOD_LABELS))
    paths = write_report(tmp_path, results)
    assert len(paths["images"]) == 4
    _check_report(tmp_path, results)
    best = max(results["methods"].values(), key=lambda m: m["metrics"]["ndcg@10"])
    md = (tmp_path / "report.md").read_text()
    assert f"**{best['metrics']['ndcg@10']:.4f}**" in md
    assert f"<b>{best['metrics']['ndcg@10']:.4f}</b>" in (tmp_path / "report.html").read_text()


def test_cli_evaluate_arguments():
    args = build_parser().parse_args(["evaluate", "--data", "d", "--out", "o", "--methods", "popularity,ease"])
    assert (args.data, args.out, args.seed, args.top_n, args.methods) == ("d", "o", 42, 100, "popularity,ease")


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_evaluation_on_generated_data(spark, tmp_path):
    from recsys_core.data.generator import generate
    from recsys_core.evaluation.run import run_evaluation

    raw = tmp_path / "raw"
    generate(raw, scale=0.002, seed=5, genome_tags=16)
    # the shipped user-AE defaults (a shorter film AE)
    config = TrainConfig(seed=1, device="cpu", film_epochs=5)
    methods = ["model", "popularity", "ease", "item_knn"]
    options = {"ease": {"lambdas": (100.0, 400.0)}, "item_knn": {"ks": (50,)}}
    results = run_evaluation(raw, tmp_path / "report", seed=3, methods=methods, train_config=config,
                             spark=spark, baseline_options=options)  # fmt: skip
    m = {name: info["metrics"] for name, info in results["methods"].items()}
    print({name: {k: round(v, 4) for k, v in x.items() if k in ("ndcg@10", "recall@20")} for name, x in m.items()})
    assert list(m) == methods
    assert m["model"]["ndcg@10"] > 1.2 * m["popularity"]["ndcg@10"]
    assert all(x["seen_leakage"] == 0 for x in m.values())
    assert all(x["user_coverage"] == 1.0 and x["users"] == results["split"]["heldout_users"] for x in m.values())
    assert results["split"]["evaluated_users"] == m["model"]["scored_users"] > 100
    assert results["model"]["history"] and results["methods"]["ease"]["params"]["lambda"] in (100.0, 400.0)
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert saved["methods"]["model"]["metrics"]["ndcg@10"] == pytest.approx(m["model"]["ndcg@10"])
    _check_report(tmp_path / "report", results)
