"""Training with real torch: data loading, split, metrics, determinism, artifacts, learning.

Most tests use a tiny features partition written here with pyarrow; the learning test
builds features from generated data with real Spark.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recsys_core.data.csr import RatingsCSR
from recsys_core.data.features import load_features, load_users
from recsys_core.data.vocab import VocabularyMismatch, ids_hash, names_hash
from recsys_core.device import select_device
from recsys_core.entrypoint import run_main
from recsys_core.errors import ConfigError
from recsys_core.models import FilmAEConfig, UserAEConfig
from recsys_core.models.user_ae import user_batch
from recsys_core.paths import Warehouse
from recsys_core.ranking.holdout import expected_holdout_size
from recsys_core.ranking.metrics import ranking_metrics
from recsys_core.training import artifacts
from recsys_core.training.config import TrainConfig, auto_batch_size
from recsys_core.training.film import train_film_ae
from recsys_core.training.item_item import ItemItemConfig
from recsys_core.training.train import run_training
from recsys_core.training.user_loop import refit_user_ae, train_user_ae, use_sampled_softmax
from recsys_core.training.validation import split_validation

from .conftest import ROOT

torch.set_num_threads(1)
DS = "2018-09-30"

TINY = TrainConfig(
    seed=3, device="cpu", max_epochs=3, batch_size=8, lr=3e-3, film_epochs=3, film_batch_size=8,
    val_users=6, eval_batch_size=16, top_n=20,
    film=FilmAEConfig(embedding_dim=4, hidden_dim=8), user=UserAEConfig(embedding_dim=4, hidden_dim=8),
)  # fmt: skip


def write_tiny_features(root: Path, n_users: int = 40, n_films: int = 15, seed: int = 0) -> Warehouse:
    """A features partition like the Spark job writes (users in two files, some empty)."""
    rng = np.random.default_rng(seed)
    wh = Warehouse(str(root))
    out = Path(wh.features(DS))
    genres, tag_ids = ["Comedy", "Drama", "Horror"], [1, 2, 3, 4]
    movie_ids = np.arange(1, n_films + 1) * 10
    has_genome = rng.random(n_films) < 0.5
    films = pa.table({
        "film_idx": pa.array(range(n_films), pa.int32()),
        "movie_id": pa.array(movie_ids, pa.int32()),
        "title": [f"Film {i}" for i in range(n_films)],
        "year": pa.array([None if i == 0 else 1980 + i for i in range(n_films)], pa.int32()),
        "genres": pa.array([list((rng.random(3) < 0.4).astype(np.float32)) for _ in range(n_films)],
                           pa.list_(pa.float32())),
        "genome": pa.array([list(rng.random(4).astype(np.float32)) if h else None for h in has_genome],
                           pa.list_(pa.float32())),
        "n_ratings": pa.array(rng.integers(1, 50, n_films), pa.int32()),
        "mean_rating": pa.array(rng.uniform(2, 5, n_films), pa.float32()),
    })  # fmt: skip
    rows = []
    for u in range(n_users):
        k = 0 if u == 1 else int(rng.integers(3, 10))
        film = np.sort(rng.choice(n_films, k, replace=False))
        rows.append({
            "user_idx": u, "user_id": 100 + u, "film_idx": film.tolist(),
            "rating": rng.choice([1.0, 2.5, 4.0, 5.0], k).tolist(), "timestamp": rng.permutation(k).tolist(),
        })  # fmt: skip
    schema = pa.schema([
        ("user_idx", pa.int32()), ("user_id", pa.int32()), ("film_idx", pa.list_(pa.int32())),
        ("rating", pa.list_(pa.float32())), ("timestamp", pa.list_(pa.int64())),
    ])  # fmt: skip
    (out / "films").mkdir(parents=True)
    (out / "users").mkdir()
    pq.write_table(films, out / "films" / "part-00000.parquet")
    half = n_users // 2
    pq.write_table(pa.Table.from_pylist(rows[:half], schema), out / "users" / "part-00000.parquet", row_group_size=7)
    pq.write_table(pa.Table.from_pylist(rows[half:], schema), out / "users" / "part-00001.parquet")
    (out / "users" / "_SUCCESS").write_text("")
    manifest = {
        "ds": DS, "genres": genres, "genome_tag_ids": tag_ids,
        "hashes": {"films": ids_hash(movie_ids), "users": ids_hash(100 + np.arange(n_users)),
                   "genres": names_hash(genres), "genome_tags": ids_hash(tag_ids)},
    }  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest))
    return wh


@pytest.fixture
def tiny(tmp_path) -> Warehouse:
    return write_tiny_features(tmp_path / "wh")


def dense_reference(path: Path, n_films: int) -> np.ndarray:
    rows = sorted(pq.read_table(path).to_pylist(), key=lambda r: r["user_idx"])
    dense = np.zeros((len(rows), n_films), dtype=np.float32)
    for r in rows:
        dense[r["user_idx"], r["film_idx"]] = r["rating"]
    return dense


def test_users_csr_equals_dense_reference(tiny):
    path = Path(tiny.features(DS)) / "users"
    users = load_users(str(path), 15)
    assert users.csr.n_users == 40 and users.csr.counts[1] == 0
    np.testing.assert_array_equal(users.csr.todense(), dense_reference(path, 15))
    np.testing.assert_array_equal(users.user_ids, 100 + np.arange(40))
    # the batch builder gathers the same entries, in the asked row order
    rows = np.array([5, 1, 0, 39])
    batch = user_batch(users.csr, rows)
    dense = np.zeros((4, 15), dtype=np.float32)
    dense[batch.rows.numpy(), batch.indices.numpy()] = 1.0
    np.testing.assert_array_equal(dense, users.csr.todense()[rows] > 0)
    np.testing.assert_allclose(
        torch.zeros(4).index_add_(0, batch.rows, batch.weights**2).numpy(), [1, 0, 1, 1], rtol=1e-6
    )  # inputs are L2-normalized (the empty user stays 0)


def test_films_content(tiny):
    films = load_features(tiny.features(DS)).films
    table = pq.read_table(Path(tiny.features(DS)) / "films").to_pylist()
    assert films.genome.shape == (15, 4) and films.genres.shape == (15, 3) and films.numeric.shape == (15, 3)
    for i, row in enumerate(table):
        assert films.has_genome[i] == (row["genome"] is not None)
        expected = row["genome"] if row["genome"] is not None else [0.0] * 4
        np.testing.assert_allclose(films.genome[i], expected, rtol=1e-6)
    assert films.numeric[0, 0] == 0.0  # missing year -> the mean
    np.testing.assert_allclose(films.numeric[:, 1:].mean(axis=0), 0.0, atol=1e-5)


def csr_from_lists(rows: list[list[tuple[int, float, int]]], n_films: int) -> RatingsCSR:
    counts = [len(r) for r in rows]
    flat = [e for r in rows for e in r]
    return RatingsCSR(
        np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        np.array([e[0] for e in flat], dtype=np.int64),
        np.array([e[1] for e in flat], dtype=np.float32),
        np.array([e[2] for e in flat], dtype=np.int64),
        n_films,
    )


def test_validation_split_hides_the_latest_fifth():
    rows = [
        [(f, 5.0 if f in (0, 7) else 3.0, 100 - f) for f in range(10)],  # latest: films 0, 1
        [(f, 4.0, f) for f in range(4)],  # < 5 ratings: never a validation user
        [(f, 4.5, f) for f in range(6)],  # 6 ratings: hide max(1, floor(1.2)) = 1 (film 5)
        [(f, 2.0, f) for f in range(8)],  # nothing relevant in the hidden part: skipped
    ]
    csr = csr_from_lists(rows, 10)
    train, val = split_validation(csr, n_users=10, seed=1)
    np.testing.assert_array_equal(val.users, [0, 2])
    assert val.n_hidden == 3
    assert val.relevant.indices.tolist() == [0, 5]  # user 0's hidden film 1 is rated 3.0
    assert train.counts.tolist() == [8, 4, 5, 8]
    assert train.indices[: 8].tolist() == list(range(2, 10))
    # the offline evaluation's rule, stated once (recsys_core.ranking.holdout)
    assert [expected_holdout_size(n) for n in (4, 6, 8, 10)] == [0, 1, 1, 2]
    again, val2 = split_validation(csr, n_users=1, seed=5)
    assert len(val2.users) == 1 and again.counts.sum() == csr.counts.sum() - val2.n_hidden


def test_ndcg_and_recall_by_hand():
    relevant = csr_from_lists([[(1, 5, 0), (4, 5, 0)], [(9, 5, 0)], []], 10)
    top = np.array([[4, 0, 1], [0, 2, 3], [1, 2, 3]])
    m = ranking_metrics(top, relevant, {"ndcg@2": 2, "recall@2": 2, "ndcg@3": 3, "recall@3": 3})
    idcg2 = 1 + 1 / math.log2(3)
    assert m["ndcg@2"] == pytest.approx((1 / idcg2 + 0) / 2)  # user 2 has nothing relevant: left out
    assert m["recall@2"] == pytest.approx((0.5 + 0) / 2)
    assert m["ndcg@3"] == pytest.approx(((1 + 1 / math.log2(4)) / idcg2 + 0) / 2)
    assert m["recall@3"] == pytest.approx((1.0 + 0) / 2)


def test_device_selection():
    assert select_device("cpu") == (torch.device("cpu"), False)
    device, _ = select_device("auto")
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_batch_size_and_softmax_choice():
    assert auto_batch_size(100) == 32 and auto_batch_size(610) == 122 and auto_batch_size(283_228) == 1024
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert use_sampled_softmax(TrainConfig(), 53_215, cpu) and not use_sampled_softmax(TrainConfig(), 9_724, cpu)
    assert not use_sampled_softmax(TrainConfig(), 53_215, cuda)
    assert use_sampled_softmax(TrainConfig(sampled_softmax="on"), 10, cuda)
    assert not use_sampled_softmax(TrainConfig(sampled_softmax="off"), 10**6, cpu)
    with pytest.raises(ConfigError, match="sampled_softmax"):
        TrainConfig(sampled_softmax="maybe").validate()


def test_time_cap_stops_inside_the_first_epoch(tiny):
    run = run_training(tiny, DS, replace(TINY, max_epochs=50, max_minutes=1e-9))
    history = run.manifest["history"]
    assert run.manifest["epochs_run"] == 1 and history[0]["users_per_s"] > 0
    assert history[0]["seconds"] < 60
    assert run.manifest["stopped_by"] == "time cap"  # the manifest says why the epochs ended


def train_once(wh: Warehouse, config: TrainConfig):
    features = load_features(wh.features(DS))
    train, val = split_validation(features.users.csr, config.val_users, config.seed)
    film, content, _ = train_film_ae(features.films, config, torch.device("cpu"))
    return film, train_user_ae(train, val, content, config, torch.device("cpu")).model


def test_same_seed_same_weights_on_cpu(tiny):
    (f1, u1), (f2, u2) = train_once(tiny, TINY), train_once(tiny, TINY)
    for a, b in ((f1, f2), (u1, u2)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    _, u3 = train_once(tiny, replace(TINY, seed=4))
    assert not torch.equal(u1.free, u3.free)


def test_loss_targets_are_the_liked_films():
    csr = csr_from_lists([[(0, 5.0, 0), (1, 3.0, 1), (2, 4.0, 2)], [(3, 2.5, 0)]], 5)
    batch = user_batch(csr, np.array([0, 1]), low_target_weight=0.2)
    assert batch.targets.tolist() == pytest.approx([1.0, 0.2, 1.0, 0.2])
    assert batch.weights.tolist() == pytest.approx([3**-0.5] * 3 + [1.0])  # every rating is an input
    assert user_batch(csr, np.array([0, 1])).targets is None


def test_refit_on_every_rating_when_validation_hides_a_large_share(tiny):
    plain = run_training(tiny, DS, replace(TINY, refit_min_hidden_share=1.1))
    refit = run_training(tiny, DS, replace(TINY, refit_min_hidden_share=0.0))
    assert plain.manifest["refit"] is None
    assert refit.manifest["refit"]["epochs"] == refit.manifest["best_epoch"] == plain.manifest["best_epoch"]
    assert refit.manifest["refit"]["complete"]
    assert refit.manifest["metrics"] == plain.manifest["metrics"]  # the validated run's figures
    assert not torch.equal(refit.user_model.free, plain.user_model.free)
    saved = artifacts.load_models(tiny.models(DS), load_features(tiny.features(DS)).manifest)
    assert torch.equal(saved.user.free, refit.user_model.free)  # the refit model is the one published
    no_time = run_training(tiny, DS, replace(TINY, refit_min_hidden_share=0.0, max_minutes=1e-9))
    assert no_time.manifest["refit"] is None  # a refit that cannot fit in the cap is skipped
    features = load_features(tiny.features(DS))
    _, cut = refit_user_ae(features.users.csr, None, TINY, torch.device("cpu"), False, epochs=3,
                           deadline=time.monotonic())  # fmt: skip
    assert cut["complete"] is False and cut["epochs"] == 1  # one batch, then the cap: dropped by the caller


def test_item_item_blend_is_chosen_on_validation(tiny):
    item_config = ItemItemConfig(l2=5.0, blends=(0.0, 1.0, 3.0), half_lives=(2.0, 8.0))
    run = run_training(tiny, DS, replace(TINY, item=item_config))
    item = run.manifest["item_item"]
    grid = item["grid"]
    assert [(row["blend"], row["half_life"]) for row in grid[:3]] == [(0.0, None), (1.0, None), (3.0, None)]
    fits = len(item["search"]["tried"])  # stage 1: every blend of every fit the search tried (blend 0 once)
    assert [(row["fit"], row["blend"]) for row in grid[: 1 + 2 * fits]] == [(0, 0.0)] + [
        (i, b) for i in range(fits) for b in (1.0, 3.0)]  # fmt: skip
    recent = item["recent"]
    key = (item["fit"], item["blend"], item["half_life"], recent["window_bins"], recent["weight"])
    chosen = next(row for row in grid if tuple(row[k] for k in ("fit", "blend", "half_life", "window", "popularity")) == key)
    assert chosen["ndcg@10"] >= grid[0]["ndcg@10"]  # a setting replaces the held one only when better
    setting = ("fit", "blend", "half_life", "window", "popularity")
    assert run.manifest["metrics"]["model"] == {k: v for k, v in chosen.items() if k not in setting}
    assert {k: v for k, v in grid[0].items() if k not in setting} == run.manifest["metrics"]["autoencoder"]
    assert float(run.user_model.item_item.blend) == item["blend"]
    assert run.user_model.config.item_half_life == item["half_life"]
    assert run.manifest["config"]["user"]["item_half_life"] == item["half_life"]  # what scoring rebuilds
    assert run.manifest["config"]["user"]["item_feedback"] == item["feedback"] == item["search"]["tried"][item["fit"]]["feedback"]
    assert item["search"]["seconds"] >= max(row["seconds"] for row in item["search"]["tried"])
    assert item["films"] > 1 and run.user_model.item_item.weight.abs().sum() > 0

    off = run_training(tiny, DS, replace(TINY, item=ItemItemConfig(blends=(0.0,))))
    assert off.manifest["item_item"]["blend"] == 0.0
    assert off.manifest["metrics"]["model"] == off.manifest["metrics"]["autoencoder"]
    assert not off.user_model.item_item.active


def test_train_job_gives_identical_weights_in_separate_processes(tiny):
    digests = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run([sys.executable, str(ROOT / "jobs" / "train.py"), "--warehouse", tiny.root, "--ds", DS,
                        "--epochs", "3", "--device", "cpu"], env=env, capture_output=True, check=True)  # fmt: skip
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in Path(tiny.models(DS)).glob("*.pt")})
    assert len(digests[0]) == 2 and digests[0] == digests[1]


def test_run_saves_loads_and_checks_vocabulary(tiny):
    run = run_training(tiny, DS, TINY)
    model_dir = tiny.models(DS)
    manifest = json.loads((Path(model_dir) / "manifest.json").read_text())
    features = load_features(tiny.features(DS))
    assert manifest["vocabulary"] == features.manifest["hashes"]
    assert manifest["seed"] == 3 and manifest["device"] == "cpu" and 1 <= manifest["epochs_run"] <= 3
    # TINY's max_epochs is 3: the epochs end at the limit unless the patience ends them first
    expected = "epochs" if manifest["epochs_run"] == TINY.max_epochs else "early stopping"
    assert manifest["stopped_by"] == expected
    assert set(manifest["metrics"]) == {"model", "autoencoder", "popularity"}
    assert "ndcg@10" in manifest["metrics"]["popularity"] and manifest["wall_seconds"] > 0

    loaded = artifacts.load_models(model_dir, features.manifest)
    batch = user_batch(features.users.csr, np.arange(40))
    with torch.no_grad():
        assert torch.equal(loaded.user(batch), run.user_model(batch))
    for a, b in ((loaded.film, run.film_model), (loaded.user, run.user_model)):
        assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())

    other = json.loads(json.dumps(features.manifest))
    other["hashes"]["films"] = "0123456789abcdef"
    with pytest.raises(VocabularyMismatch, match="films: model .* != features 0123456789abcdef"):
        artifacts.load_models(model_dir, other)

    emb = Path(tiny.embeddings(DS))
    users = pq.read_table(emb / "users")
    films = pq.read_table(emb / "films")
    assert users.schema.field("embedding").type == pa.list_(pa.float32())
    assert users.column("user_id").to_pylist() == list(range(100, 140))
    assert films.column("movie_id").to_pylist() == list(range(10, 160, 10))
    u = np.stack(users.column("embedding").to_numpy(zero_copy_only=False))
    f = np.stack(films.column("embedding").to_numpy(zero_copy_only=False))
    with torch.no_grad():  # the embeddings are the AE's side of the score (no item-item term)
        expected = run.user_model.ae_logits(batch).numpy()
    np.testing.assert_allclose(u @ f.T + films.column("bias").to_numpy(), expected, rtol=1e-4, atol=1e-4)
    assert not any(p.name.startswith(".staging") for p in Path(model_dir).parent.iterdir())


def test_train_job_exit_codes(tiny, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("train_job", ROOT / "jobs" / "train.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    args = ["--warehouse", tiny.root, "--ds", DS, "--epochs", "1", "--seed", "2", "--device", "cpu"]
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:  # run_main points logging at this test's captured stderr: undo that afterwards
        assert run_main(job.main, args) == 0
        assert json.loads(capsys.readouterr().out)["epochs_run"] == 1
        assert run_main(job.main, ["--warehouse", str(tmp_path / "none"), "--ds", DS]) == 2
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert "run the features job" in capsys.readouterr().err


@pytest.mark.slow
def test_user_ae_beats_popularity_on_generated_data(spark, tmp_path):
    from recsys_core.data.generator import generate
    from recsys_core.spark.features import run_features
    from recsys_core.spark.ingest import run_ingest

    raw = tmp_path / "raw"
    generate(raw, scale=0.003, seed=11, genome_tags=16)
    wh = Warehouse(str(tmp_path / "wh"))
    run_ingest(spark, str(raw), wh, DS)
    run_features(spark, wh, DS)
    # the shipped defaults, with fewer epochs; exact and sampled softmax (850 users, ~20 s each)
    for sampled in ("off", "on"):
        config = TrainConfig(seed=1, device="cpu", max_epochs=30, film_epochs=5, val_users=200,
                             sampled_softmax=sampled, negatives=256)  # fmt: skip
        manifest = run_training(wh, DS, config).manifest
        metrics = manifest["metrics"]
        print(f"\n{sampled}: validation model {metrics['model']} popularity {metrics['popularity']}")
        assert manifest["sampled_softmax"] == (sampled == "on")
        assert metrics["model"]["ndcg@10"] >= 1.5 * metrics["popularity"]["ndcg@10"]
