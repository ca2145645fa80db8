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
