"""Spark's own logging at WARN in the jobs (conf/log4j2.properties), with a switch back to INFO.

The DAG's SparkSubmitOperators and the Makefile's spark-submit lines pass the file to the
driver and executors; the commands they build are taken from them (the hook's own command
line, ``make -n``) and run on a small job that starts its session like the real ones
(``recsys_core.spark.session.get_spark``): at WARN only the job's lines remain; with
``RECSYS_SPARK_LOG_LEVEL=INFO`` Spark's INFO lines are back, after the session's
``setLogLevel`` too.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .conftest import ROOT

LOG4J = ROOT / "conf" / "log4j2.properties"
OPTION = f"-Dlog4j2.configurationFile=file:{LOG4J}"
SPARK_LINE = re.compile(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d (TRACE|DEBUG|INFO|WARN|ERROR) ", re.MULTILINE)

DAG_PROBE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("the_dag", sys.argv[1]); m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
print(json.dumps({t.task_id: t._get_hook()._build_spark_submit_command("APP")
                  for t in m.recommendations_dag.tasks if isinstance(t, SparkSubmitOperator)}))
"""

APP = """
import logging
from recsys_core.spark.session import get_spark

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
spark = get_spark("log-level-probe")
rows = spark.range(1000).selectExpr("id % 7 AS k").groupBy("k").count().collect()
logging.getLogger("recsys_core.probe").info("groups %d", len(rows))
spark.stop()
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS_"))}
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    return env | extra


@pytest.fixture(scope="module")
def dag_commands(tmp_path_factory) -> dict[str, list[str]]:
    """The spark-submit command line of each Spark task, as the DAG's hook builds it."""
    env = clean_env(AIRFLOW_HOME=str(tmp_path_factory.mktemp("airflow-home")),
                    AIRFLOW_CONN_SPARK_DEFAULT='{"conn_type": "spark", "host": "local[1]"}')  # fmt: skip
    result = subprocess.run([sys.executable, "-c", DAG_PROBE, str(ROOT / "dags" / "movielens_recommendations.py")],
                            env=env, capture_output=True, text=True, timeout=180, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def make_submit_lines() -> list[list[str]]:
    """The Makefile's spark-submit lines (``make -n prep``: printed, never run)."""
    result = subprocess.run(["make", "-n", "-o", ".venv/.installed", "prep", "DATA=/nonexistent"], cwd=ROOT,
                            env=clean_env(), capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [shlex.split(line) for line in result.stdout.splitlines() if "spark-submit" in line]


def test_the_dag_and_the_makefile_pass_the_log4j_file_to_driver_and_executors(dag_commands):
    assert LOG4J.is_file()
    assert {"ingest", "build_features"} <= set(dag_commands)
    lines = make_submit_lines()
    assert len(lines) == 2  # ingest and features
    for name, command in [*dag_commands.items(), *(("make", line) for line in lines)]:
        confs = [command[i + 1] for i, arg in enumerate(command) if arg == "--conf"]
        for side in ("driver", "executor"):
            assert f"spark.{side}.extraJavaOptions={OPTION}" in confs, (name, side, command)


def test_the_log4j_file_keeps_spark_at_warn_unless_switched():
    text = LOG4J.read_text()
    assert "rootLogger.level = ${env:RECSYS_SPARK_LOG_LEVEL:-warn}" in text
    # the jobs' setLogLevel("WARN") moves the root logger only: Spark's own loggers carry the switch
    assert "logger.spark.name = org.apache.spark" in text
    assert "logger.spark.level = ${env:RECSYS_SPARK_LOG_LEVEL:-warn}" in text


def run_app(command: list[str], app: Path, **env: str) -> str:
    argv = [*command[: command.index("APP") if "APP" in command else len(command)], str(app)]
    result = subprocess.run(argv, cwd=ROOT, env=clean_env(**env), capture_output=True, text=True, timeout=600,
                            check=False)  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


@pytest.mark.slow
def test_spark_submit_logs_only_the_jobs_lines_at_warn_and_spark_info_when_switched(dag_commands, tmp_path):
    app = tmp_path / "probe.py"
    app.write_text(APP)
    make_ingest = next(line for line in make_submit_lines() if "jobs/ingest.py" in " ".join(line))
    make_prefix = make_ingest[: next(i for i, a in enumerate(make_ingest) if a.endswith("jobs/ingest.py"))]
    make_prefix = [a.replace("local[*]", "local[1]") for a in make_prefix]
    with ThreadPoolExecutor(2) as pool:  # the two JVMs start side by side
        quiet = pool.submit(run_app, dag_commands["ingest"], app)
        loud = pool.submit(run_app, make_prefix + ["APP"], app, RECSYS_SPARK_LOG_LEVEL="INFO")
        quiet, loud = quiet.result(), loud.result()
    assert "INFO recsys_core.probe: groups 7" in quiet and "INFO recsys_core.probe: groups 7" in loud
    assert "Using Spark's default log4j profile" not in quiet + loud  # our file was loaded
    # at WARN: no INFO line of Spark's; a warning or two may remain (e.g. the UI port taken by another app)
    assert [level for level in SPARK_LINE.findall(quiet) if level not in ("WARN", "ERROR")] == [], quiet
    assert len(SPARK_LINE.findall(quiet)) <= 5, quiet
    assert len(SPARK_LINE.findall(loud)) > 20, loud
    # after get_spark's setLogLevel("WARN"): the switch still shows Spark's INFO lines
    assert re.search(r" INFO (SparkContext: Successfully stopped|DAGScheduler: Job 0 finished)", loud), loud
