"""Every Spark job on a real standalone cluster (issue 16): same outputs as on ``local[2]``.

A master and one worker (1 core) run from the installed pyspark on 127.0.0.1
(``tests/cluster.py``); ingest, features and the Spark scorer go through ``spark-submit
--master spark://127.0.0.1:PORT``, with executors in separate JVMs and Python workers
started by the worker. Their tables must equal those of the same jobs on ``local[2]`` (the
test session's Spark), and the Spark scorer's rows those of the local scorer on the same
model. The tiny drop (scale 0.0005: 142 users, ~14K ratings) keeps it to a few minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_core.data.generator import generate
from recsys_core.paths import Warehouse
from recsys_core.scoring.check import run_check
from recsys_core.scoring.score import SCORING_META, ScoreConfig, run_scoring
from recsys_core.training.train import run_training

from .conftest import ROOT, VENV_BIN
from .test_scoring import assert_same_rows
from .test_training import TINY

pytestmark = pytest.mark.slow

DS = "2018-09-30"
SNAPSHOT_TABLES = ("ratings", "movies", "genome", "genome_tags", "tags", "links")
FEATURE_TABLES = ("films", "users")
COMMON = ["--conf", "spark.sql.shuffle.partitions=4", "--conf", "spark.default.parallelism=2",
          "--conf", "spark.ui.enabled=false", "--conf", "spark.ui.showConsoleProgress=false"]  # fmt: skip


@pytest.fixture(scope="module")
def cluster(spark_cluster):
    return spark_cluster


def submit(master_args: list[str], script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1"}  # fmt: skip
    cmd = [str(VENV_BIN / "spark-submit"), *master_args, *COMMON, f"jobs/{script}", *args]
    started = time.monotonic()
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    print(f"{script} on {master_args[1]}: {time.monotonic() - started:.1f}s")
    assert result.returncode == 0, f"{script} on {master_args[1]}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def prepare(master_args: list[str], raw: Path, wh: Path) -> None:
    submit(master_args, "ingest.py", "--raw", str(raw), "--warehouse", str(wh), "--ds", DS)
    submit(master_args, "features.py", "--warehouse", str(wh), "--ds", DS)


def table(path: Path) -> pa.Table:
    """A table's rows in a canonical order (by every column that is not a list)."""
    data = pq.read_table(path)
    keys = [f.name for f in data.schema if not pa.types.is_list(f.type) and not pa.types.is_large_list(f.type)]
    return data.sort_by([(k, "ascending") for k in keys])


def manifest(partition: str) -> dict:
    return json.loads((Path(partition) / "manifest.json").read_text())


@pytest.fixture(scope="module")
def runs(cluster, spark, tmp_path_factory) -> tuple[Warehouse, Warehouse]:
    """(warehouse of the local[2] runs, warehouse of the cluster runs) of one tiny drop.

    The local runs use the test session's ``local[2]`` Spark (the jobs' settings, one JVM
    start fewer per job); the cluster runs go through spark-submit.
    """
    from recsys_core.spark.features import run_features
    from recsys_core.spark.ingest import run_ingest

    base = tmp_path_factory.mktemp("on-cluster")
    raw = base / "raw"
    generate(raw, scale=0.0005, seed=11, genome_tags=16)
    local, remote = Warehouse(str(base / "wh-local")), base / "wh-cluster"
    run_ingest(spark, str(raw), local, DS)
    run_features(spark, local, DS)
    prepare(cluster.submit_args(), raw, remote)
    return local, Warehouse(str(remote))


def test_the_cluster_ran_the_jobs_in_its_own_executors(cluster, runs):
    apps = sorted(cluster.work.glob("app-*"))
    assert len(apps) >= 2  # ingest and features, each with its executor's work dir on the worker
    assert all(any(app.glob("*/stderr")) for app in apps)


def test_ingest_on_the_cluster_equals_local(runs):
    local, remote = runs
    for name in SNAPSHOT_TABLES:
        assert table(Path(remote.snapshot(DS)) / name).equals(table(Path(local.snapshot(DS)) / name)), name
    assert manifest(remote.snapshot(DS)) == manifest(local.snapshot(DS))
    assert table(Path(remote.quarantine(DS))).equals(table(Path(local.quarantine(DS))))


def test_features_on_the_cluster_equal_local(runs):
    local, remote = runs
    for name in FEATURE_TABLES:
        assert table(Path(remote.features(DS)) / name).equals(table(Path(local.features(DS)) / name)), name
    assert manifest(remote.features(DS)) == manifest(local.features(DS))


def test_spark_scorer_on_the_cluster_writes_the_local_scorers_rows(cluster, runs):
    local, remote = runs
    run_training(local, DS, TINY)
    shutil.copytree(local.models(DS), remote.models(DS))  # the features are equal (test above)
    config = ScoreConfig(top_n=20, device="cpu", batch_size=64)
    local_meta = run_scoring(local, DS, config)
    submit(cluster.submit_args(), "score_spark.py", "--warehouse", remote.root, "--ds", DS, "--top-n", "20",
           "--device", "cpu", "--batch-size", "64")  # fmt: skip
    staged = Path(remote.recommendations_staging(DS))
    meta = json.loads((staged / SCORING_META).read_text())
    assert meta["master"] == cluster.master_url and meta["model_version"] == local_meta["model_version"]
    assert (meta["users"], meta["rows"]) == (local_meta["users"], local_meta["rows"])
    assert_same_rows(pq.read_table(staged), pq.read_table(local.recommendations_staging(DS)))
    assert run_check(remote, DS, min_model_ratio=0.0).passed
