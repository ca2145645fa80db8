"""The jobs/ entry points as an operator runs them: spark-submit, exit codes, messages."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from recsys_core.data.generator import generate

from .conftest import ROOT, VENV_BIN

DS = "2018-09-30"


def submit(script: str, *args: str) -> subprocess.CompletedProcess:
    """spark-submit a job; its Python stderr arrives on stdout (Spark's PythonRunner merges them)."""
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    cmd = [str(VENV_BIN / "spark-submit"), "--master", "local[2]", "--conf", "spark.ui.enabled=false",
           f"jobs/{script}", *args]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_ingest_then_features_with_spark_submit(tmp_path):
    raw, wh = tmp_path / "raw", tmp_path / "wh"
    shape = generate(raw, scale=0.001, seed=5, genome_tags=12)
    ingest = submit("ingest.py", "--raw", str(raw), "--warehouse", str(wh), "--ds", DS)
    assert ingest.returncode == 0, ingest.stderr[-3000:]
    assert re.search(rf"ratings\.csv\s+read\s+{shape.ratings:,}\s+kept\s+{shape.ratings:,}\s", ingest.stdout)
    features = submit("features.py", "--warehouse", str(wh), "--ds", DS, "--min-film-ratings", "2")
    assert features.returncode == 0, features.stderr[-3000:]
    counts = json.loads((wh / "features" / f"ds={DS}" / "manifest.json").read_text())["counts"]
    assert counts["users"] == shape.users
    users = pq.read_table(wh / "features" / f"ds={DS}" / "users")
    assert users.num_rows == shape.users
    films = pq.read_table(wh / "features" / f"ds={DS}" / "films")
    assert films.num_rows == counts["films"] and min(films.column("n_ratings").to_pylist()) >= 2
    assert counts["films_with_genome"] > 0


def test_bad_input_exits_2_with_one_clear_line(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "movies.csv").write_text("movieId,title,genres\n1,A (1990),Drama\n")
    result = submit("ingest.py", "--raw", str(raw), "--warehouse", str(tmp_path / "wh"), "--ds", DS)
    assert result.returncode == 2
    assert "ERROR: required file ratings.csv is missing from the drop" in result.stdout + result.stderr
    result = submit("features.py", "--warehouse", str(tmp_path / "wh"), "--ds", "2018-02-30")
    assert result.returncode == 2
    assert "ERROR: --ds must be a date as YYYY-MM-DD, got '2018-02-30'" in result.stdout + result.stderr
    assert not Path(tmp_path / "wh" / "snapshot").exists()
