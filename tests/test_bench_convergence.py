"""bench/convergence.py's guards: it empties its --converged directory before training, so it
must refuse one that overlaps the nightly warehouse or holds anything but its own runs, and
``--reuse`` must not keep a run trained on other features (a newcomer's test deleted a
warehouse's parent directory before these guards)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def convergence(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # bench scripts import their siblings by name
    import convergence

    return convergence


def write_manifest(wh: Path, ds: str, vocabulary: dict, **extra) -> None:
    models = wh / "models" / f"ds={ds}"
    models.mkdir(parents=True)
    (models / "manifest.json").write_text(json.dumps({"vocabulary": vocabulary, **extra}))


def test_overlapping_or_foreign_directories_are_refused_and_left_alone(convergence, tmp_path):
    nightly = tmp_path / "wh"
    (nightly / "features").mkdir(parents=True)
    for converged in (nightly, tmp_path, nightly / "sub", Path(str(nightly) + "/.")):
        with pytest.raises(SystemExit, match="overlap"):
            convergence.check_paths(nightly, converged)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="not deleting it"):
        convergence.check_paths(nightly, foreign)
    assert (foreign / "precious.txt").read_text() == "keep me" and (nightly / "features").is_dir()
    convergence.check_paths(nightly, tmp_path / "new")  # absent: fine
    (tmp_path / "empty").mkdir()
    convergence.check_paths(nightly, tmp_path / "empty")  # empty: fine
    (foreign / convergence.MARKER).touch()
    convergence.check_paths(nightly, foreign)  # marked as the script's own: fine


def test_reuse_keeps_only_a_run_on_the_same_features(convergence, tmp_path):
    ds = "2018-09-30"
    converged = tmp_path / "converged"
    assert not convergence.reusable(converged, ds, {"vocabulary": {"films": "a"}})  # nothing there
    write_manifest(converged, ds, {"films": "a"})
    assert convergence.reusable(converged, ds, {"vocabulary": {"films": "a"}})
    assert not convergence.reusable(converged, ds, {"vocabulary": {"films": "b"}})  # other features: train again


def test_report_warns_when_the_reference_did_not_stop_by_itself(convergence):
    run = {"model": 0.40, "autoencoder": 0.35, "search_points": 2, "best_epoch": 7, "epochs_run": 10,
           "train_seconds": 600.0, "stopped_by": "early stopping", "max_minutes": 10.0}  # fmt: skip
    reference = {**run, "model": 0.41, "search_points": 10, "max_minutes": convergence.UNBUDGETED_MINUTES}
    verdict = convergence.compare(run, reference)
    assert verdict["ratio"] == pytest.approx(0.40 / 0.41, abs=1e-4) and not verdict["within_1pct"]
    text = convergence.report(run, reference, verdict)
    assert "cap 10 min" in text and "without a time budget" in text and "warning" not in text
    limited = {**reference, "stopped_by": "epochs", "best_epoch": 50, "epochs_run": 50}
    assert "warning: the reference's user AE was stopped by its epochs" in convergence.report(run, limited, verdict)
