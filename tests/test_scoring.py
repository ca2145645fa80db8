"""Scoring and the quality gate with real torch on a tiny trained model."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from recsys_core.data.features import load_features
from recsys_core.data.vocab import VocabularyMismatch
from recsys_core.entrypoint import run_main
from recsys_core.paths import Warehouse
from recsys_core.ranking.top_n import top_n_unseen
from recsys_core.scoring.check import CHECK_FILE, GateFailed, run_check
from recsys_core.scoring.score import SCORING_META, ScoreConfig, run_scoring
from recsys_core.training.train import run_training

from .conftest import ROOT
from .test_training import DS, TINY, write_tiny_features

torch.set_num_threads(1)


def test_top_n_masks_seen_and_breaks_ties_by_film_index():
    scores = torch.tensor([
        [0.5, 0.9, 0.9, 0.1, 0.9, 0.2],  # three-way tie at the top, one of them seen
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],  # all tied: the cut at k spills over
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # only two unseen films
    ])  # fmt: skip
    rows = torch.tensor([0, 2, 2, 2, 2])
    films = torch.tensor([2, 5, 4, 3, 2])
    top, values, count = top_n_unseen(scores.clone(), rows, films, 3)
    assert top[0].tolist() == [1, 4, 0] and values[0].tolist() == pytest.approx([0.9, 0.9, 0.5])
    assert top[1].tolist() == [0, 1, 2]
    assert count.tolist() == [3, 3, 2] and top[2, :2].tolist() == [1, 0]


def test_top_n_keeps_nan_for_the_gate():
    _, values, count = top_n_unseen(torch.tensor([[0.1, float("nan"), 0.3]]), torch.tensor([0]), torch.tensor([2]), 2)
    assert count.tolist() == [2] and np.isnan(values).any()




@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> Warehouse:
    wh = write_tiny_features(tmp_path_factory.mktemp("scoring") / "wh")
    run_training(wh, DS, TINY)
    run_scoring(wh, DS, ScoreConfig(top_n=10, device="cpu"))
    return wh


def staging_table(wh: Warehouse) -> pa.Table:
    return pq.read_table(wh.recommendations_staging(DS))


def test_every_user_gets_unseen_films(scored):
    table = staging_table(scored).to_pandas()
    features = load_features(scored.features(DS))
    csr, user_ids, movie_ids = features.users.csr, features.users.user_ids, features.films.movie_ids
    assert sorted(table.user_id.unique()) == sorted(user_ids)
    for row, user in enumerate(user_ids):
        mine = table[table.user_id == user].sort_values("rank")
        seen = set(movie_ids[csr.indices[csr.indptr[row] : csr.indptr[row + 1]]])
        assert len(mine) == min(10, csr.n_films - len(seen))
        assert mine["rank"].tolist() == list(range(1, len(mine) + 1))
        assert not seen & set(mine.movie_id) and mine.movie_id.is_unique
        assert mine.score.is_monotonic_decreasing
        assert set(mine.source) == {"popularity" if len(seen) == 0 else "model"}
    assert table.model_version.nunique() == 1 and table.model_version[0].startswith(DS + "-")
    meta = json.loads((Path(scored.recommendations_staging(DS)) / SCORING_META).read_text())
    assert meta["users"] == 40 and meta["popularity_users"] == 1 and meta["rows"] == len(table)


def test_scoring_again_gives_identical_rows(scored, tmp_path):
    before = staging_table(scored)
    run_scoring(scored, DS, ScoreConfig(top_n=10, device="cpu", batch_size=7))
    assert staging_table(scored).equals(before)


def test_exact_path_writes_the_fast_paths_rows(scored):
    """ScoreConfig.exact ranks every film by the reference score: the same table, bit for bit."""
    before = staging_table(scored)
    meta = run_scoring(scored, DS, ScoreConfig(top_n=10, device="cpu", exact=True))
    assert staging_table(scored).equals(before)
    assert meta["exact"] and meta["uncertified_users"] == 0
    fast = run_scoring(scored, DS, ScoreConfig(top_n=10, device="cpu"))
    assert not fast["exact"] and staging_table(scored).equals(before)


def test_gate_passes_a_good_partition(scored):
    report = run_check(scored, DS, min_model_ratio=0.0)
    assert report.passed and report.figures["rows"] == staging_table(scored).num_rows
    assert json.loads((Path(scored.recommendations_staging(DS)) / CHECK_FILE).read_text())["passed"]


def broken(table: pa.Table, contract: str, seen_movie: int) -> pa.Table:
    """``table`` (sorted by user, rank) with one contract broken for its first user."""
    df = table.to_pandas()
    first = df.index[(df.user_id == df.user_id.iloc[0])]
    if contract == "seen_film":
        df.loc[first[0], "movie_id"] = seen_movie
    elif contract == "duplicate":
        df.loc[first[1], "movie_id"] = df.loc[first[0], "movie_id"]
    elif contract == "missing_user":
        df = df[df.user_id != df.user_id.iloc[-1]]
    elif contract == "non_finite_score":
        df.loc[first[2], "score"] = np.nan
    elif contract == "rank":
        df.loc[first[3], "rank"] = 42
    elif contract == "unknown_movie":
        df.loc[first[0], "movie_id"] = 7
    elif contract == "score_order":
        df.loc[first[4], "score"] = df.loc[first[0], "score"] + 1
    return pa.Table.from_pandas(df, schema=table.schema, preserve_index=False)


@pytest.mark.parametrize(
    "contract", ["seen_film", "duplicate", "missing_user", "non_finite_score", "rank", "unknown_movie", "score_order"]
)
def test_gate_names_each_broken_contract(scored, contract):
    good = staging_table(scored)
    features = load_features(scored.features(DS))
    csr = features.users.csr
    first_user = int(np.argmin(features.users.user_ids))  # the first user of the sorted table
    seen_movie = int(features.films.movie_ids[csr.indices[csr.indptr[first_user]]])
    part = Path(scored.recommendations_staging(DS)) / "part-00000.parquet"
    ordered = good.sort_by([("user_id", "ascending"), ("rank", "ascending")])
    pq.write_table(broken(ordered, contract, seen_movie), part)
    try:
        with pytest.raises(GateFailed, match=f"- {contract}: ") as info:
            run_check(scored, DS, min_model_ratio=0.0)
        assert not (part.parent / CHECK_FILE).exists()
        print(info.value)
    finally:
        pq.write_table(good, part)


def test_gate_rejects_a_model_no_better_than_popularity(scored):
    with pytest.raises(GateFailed, match=r"model_quality: .*ndcg@10 .* < 100.0 x popularity"):
        run_check(scored, DS, min_model_ratio=100.0)


def test_scoring_refuses_a_model_of_other_features(tmp_path):
    wh = write_tiny_features(tmp_path / "wh")
    run_training(wh, DS, replace(TINY, max_epochs=1))
    manifest = Path(wh.features(DS)) / "manifest.json"
    other = json.loads(manifest.read_text())
    other["hashes"]["films"] = "0123456789abcdef"
    manifest.write_text(json.dumps(other))
    with pytest.raises(VocabularyMismatch, match="films"):
        run_scoring(wh, DS, ScoreConfig(device="cpu"))
    assert not Path(wh.recommendations_staging(DS)).exists()


def test_score_and_check_jobs_exit_codes(scored, tmp_path, capsys):
    import importlib.util
    import logging

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"{name}_job", ROOT / "jobs" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    score, check = load("score"), load("check")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        assert run_main(score.main, ["--warehouse", scored.root, "--ds", DS, "--top-n", "10", "--device", "cpu"]) == 0
        assert json.loads(capsys.readouterr().out)["users"] == 40
        assert run_main(check.main, ["--warehouse", scored.root, "--ds", DS, "--min-model-ratio", "0"]) == 0
        assert json.loads(capsys.readouterr().out)["rows"] > 0
        assert run_main(check.main, ["--warehouse", str(tmp_path / "none"), "--ds", DS]) == 2
        assert "run the score job" in capsys.readouterr().err
        assert run_main(score.main, ["--warehouse", scored.root, "--ds", DS, "--top-n", "0"]) == 2
        assert "--top-n must be >= 1" in capsys.readouterr().err
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert pc.min(staging_table(scored).column("rank")).as_py() == 1


# ---------------------------------------------------------------- the Spark scorer (issue 16)


def contract_rows(table: pa.Table) -> pa.Table:
    return table.sort_by([("user_id", "ascending"), ("rank", "ascending")])


def assert_same_rows(spark_rows: pa.Table, local_rows: pa.Table) -> None:
    """Same films, ranks, sources and model per user; scores within float tolerance."""
    a, b = contract_rows(spark_rows), contract_rows(local_rows)
    assert a.num_rows == b.num_rows > 0
    for column in ("user_id", "rank", "movie_id", "source", "model_version"):
        assert a.column(column).equals(b.column(column)), column
    np.testing.assert_allclose(a.column("score").to_numpy(), b.column("score").to_numpy(), rtol=1e-5, atol=1e-6)


def copy_of(wh: Warehouse, to: Path) -> Warehouse:
    """The features and model of ``wh`` in a fresh warehouse (nothing scored)."""
    import shutil

    copy = Warehouse(str(to))
    for part in (wh.features(DS), wh.models(DS)):
        shutil.copytree(part, Path(copy.root) / Path(part).relative_to(wh.root))
    return copy


@pytest.mark.slow
@pytest.mark.parametrize(("batch_size", "min_user_films"), [(7, 1), (2048, 4)])
def test_spark_scorer_writes_the_local_scorers_rows(scored, spark, tmp_path, batch_size, min_user_films):
    from recsys_core.publish.contract import SCHEMA
    from recsys_core.scoring.spark_scoring import run_spark_scoring

    wh = copy_of(scored, tmp_path / "wh")
    config = ScoreConfig(top_n=10, device="cpu", batch_size=batch_size, min_user_films=min_user_films)
    local_meta = run_scoring(wh, DS, config)
    local = staging_table(wh)
    meta = run_spark_scoring(spark, wh, DS, config)
    rows = staging_table(wh)
    assert rows.schema.equals(SCHEMA)
    assert_same_rows(rows, local)
    if min_user_films > 1:  # the popularity fallback ran for more than the one user without films
        assert pc.sum(pc.equal(rows.column("source"), "popularity")).as_py() > 10
    same = ("ds", "top_n", "model_version", "device", "users", "model_users", "popularity_users", "rows", "films")
    assert {k: meta[k] for k in same} == {k: local_meta[k] for k in same}
    assert meta["engine"] == "spark"
    assert json.loads((Path(wh.recommendations_staging(DS)) / SCORING_META).read_text())["rows"] == rows.num_rows
    assert run_check(wh, DS, min_model_ratio=0.0).passed  # the gate reads Spark's part files as it reads ours


@pytest.mark.slow
def test_spark_scorer_refuses_missing_or_mismatched_inputs(scored, spark, tmp_path):
    import shutil

    from recsys_core.errors import ConfigError, InputError
    from recsys_core.scoring.spark_scoring import run_spark_scoring

    wh = copy_of(scored, tmp_path / "wh")
    with pytest.raises(ConfigError, match="--torch-threads"):
        run_spark_scoring(spark, wh, DS, ScoreConfig(device="cpu"), torch_threads=-1)
    manifest = Path(wh.features(DS)) / "manifest.json"
    good = manifest.read_text()
    other = json.loads(good)
    other["hashes"]["films"] = "0123456789abcdef"
    manifest.write_text(json.dumps(other))
    with pytest.raises(VocabularyMismatch, match="films"):
        run_spark_scoring(spark, wh, DS, ScoreConfig(device="cpu"))
    manifest.write_text(good)
    shutil.rmtree(wh.models(DS))
    with pytest.raises(InputError, match="no model at .*run the train job"):
        run_spark_scoring(spark, wh, DS, ScoreConfig(device="cpu"))
    assert not Path(wh.recommendations_staging(DS)).exists()
