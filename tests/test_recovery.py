"""Damage a newcomer met: a bit-flipped checkpoint, a Spark job killed mid-swap, a sloppy ds."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys_core.dates import parse_ds
from recsys_core.errors import ConfigError, CorruptFile
from recsys_core.model_version import USER_WEIGHTS, current_model_version
from recsys_core.spark import fs as spark_fs
from recsys_core.training import artifacts
from recsys_core.training.train import run_training

from .test_training import DS, TINY, write_tiny_features


def test_a_bit_flipped_checkpoint_is_refused_by_score_check_and_publish(tmp_path):
    wh = write_tiny_features(tmp_path / "wh")
    run_training(wh, DS, TINY)
    model_dir = wh.models(DS)
    current_model_version(model_dir, DS)  # intact: fine
    path = Path(model_dir) / USER_WEIGHTS
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])  # still loads in torch
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFile, match=r"user_ae\.pt: damaged model checkpoint .* re-run the train job"):
        artifacts.load_models(model_dir)  # what score does
    with pytest.raises(CorruptFile, match=r"user_ae\.pt: damaged model checkpoint"):
        current_model_version(model_dir, DS)  # what check and publish do


def test_a_spark_swap_killed_between_its_renames_is_recovered_by_the_next(spark, tmp_path):
    final = tmp_path / "snapshot" / "ds=2018-09-30"
    old = tmp_path / "snapshot" / ".staging-ds=2018-09-30-deadbeef-old"  # the killed swap moved it aside
    stale = tmp_path / "snapshot" / ".staging-ds=2018-09-30-cafecafe"  # a killed job's half-written output
    neighbour = tmp_path / "snapshot" / ".staging-ds=2018-09-3-00000000"  # another date's: not ours
    for d, text in ((old, "old"), (stale, "half"), (neighbour, "other")):
        d.mkdir(parents=True)
        (d / "part").write_text(text)
    spark_fs.recover(spark, str(final))
    assert (final / "part").read_text() == "old" and not old.exists() and not stale.exists()
    assert neighbour.exists()
    new = tmp_path / "snapshot" / ".staging-ds=2018-09-30-12345678"
    new.mkdir()
    (new / "part").write_text("new")
    (tmp_path / "snapshot" / ".staging-ds=2018-09-30-99999999").mkdir()  # another leftover
    spark_fs.swap_in(spark, str(new), str(final))
    assert (final / "part").read_text() == "new"
    assert sorted(p.name for p in (tmp_path / "snapshot").iterdir()) == [".staging-ds=2018-09-3-00000000", final.name]


def test_ds_must_be_zero_padded():
    assert parse_ds("2018-09-30").isoformat() == "2018-09-30"
    for bad in ("2018-9-30", "2018-09-3", "20180930", "2018-02-30"):
        with pytest.raises(ConfigError, match="YYYY-MM-DD"):
            parse_ds(bad)


def test_embeddings_of_another_model_are_rewritten_by_score(tmp_path):
    from recsys_core.model_version import model_version
    from recsys_core.scoring.score import ScoreConfig, run_scoring

    wh = write_tiny_features(tmp_path / "wh")
    run_training(wh, DS, TINY)
    version = model_version(wh.models(DS), DS)
    assert artifacts.embeddings_model_version(wh.embeddings(DS)) == version  # training wrote them
    # a train killed between its models and its embeddings: the embeddings name another model
    (Path(wh.embeddings(DS)) / artifacts.EMBEDDINGS_MODEL).write_text('{"model_version": "2018-09-30-000000000000"}')
    run_scoring(wh, DS, ScoreConfig(top_n=5, device="cpu"))
    assert artifacts.embeddings_model_version(wh.embeddings(DS)) == version
