"""The Airflow DAG: integrity, and whole runs through ``dag.test()`` with real Spark and torch.

The run tests share one Airflow home (SQLite metadata DB in a temp dir) and point the DAG
at each test's drop and warehouse through Airflow Variables given as environment
variables (``AIRFLOW_VAR_*``), the way an operator would set them.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from recsys_core.data.generator import generate

from .airflow_env import configure_airflow
from .conftest import ROOT

DAG_ID = "movielens_recommendations"
TASKS = ["ingest", "build_features", "train", "score", "check", "publish", "record_metrics"]
LATE, EARLY = "2018-09-30", "2012-06-30"
FAST = {"max_epochs": 12, "top_n": 10, "min_model_ratio": 1.0}

PARSE_PROBE = """
import importlib.util, json, sys, time
import airflow.sdk  # Airflow itself is not the DAG file's cost
t0 = time.perf_counter()
spec = importlib.util.spec_from_file_location("the_dag", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
seconds = time.perf_counter() - t0
dag = next(v for v in vars(module).values() if type(v).__name__ == "DAG")
print(json.dumps({
    "seconds": seconds,
    "heavy": sorted(m for m in ("torch", "pyspark", "recsys_core", "pandas") if m in sys.modules),
    "tasks": {t.task_id: {"retries": t.retries, "backoff": bool(t.retry_exponential_backoff),
                          "timeout": t.execution_timeout.total_seconds() if t.execution_timeout else None,
                          "pool": t.pool, "queue": t.queue, "downstream": sorted(t.downstream_task_ids),
                          "outlets": [getattr(o, "name", None) for o in t.outlets]}
              for t in dag.tasks},
    "schedule": str(dag.timetable.expression), "tz": str(dag.timetable.timezone), "catchup": dag.catchup, "max_active_runs": dag.max_active_runs,
    "tags": sorted(dag.tags), "owner": dag.owner, "doc": bool(dag.doc_md), "params": sorted(dag.params),
}))
"""


def test_dag_parses_fast_without_heavy_imports_and_with_retries_everywhere():
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    out = subprocess.run([sys.executable, "-c", PARSE_PROBE, str(ROOT / "dags" / f"{DAG_ID}.py")], env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout  # fmt: skip
    info = json.loads(out.strip().splitlines()[-1])
    assert info["seconds"] < 1.0, info["seconds"]
    assert info["heavy"] == []
    tasks = info["tasks"]
    assert sorted(tasks) == sorted(TASKS)
    for upstream, downstream in itertools.pairwise(TASKS):
        assert tasks[upstream]["downstream"] == [downstream]
    for name, t in tasks.items():
        assert t["retries"] >= 1 and t["backoff"] and t["timeout"], name
    assert tasks["train"]["pool"] == "gpu" and tasks["train"]["queue"] == "gpu"
    assert tasks["publish"]["outlets"] == ["movielens_recommendations"]
    assert info["schedule"] == "30 2 * * *" and info["tz"] == "UTC" and info["catchup"] is False and info["max_active_runs"] == 1
    assert info["owner"] == "recsys" and info["doc"] and "recsys" in info["tags"]
    assert {"top_n", "min_film_ratings", "max_epochs", "seed", "sql_url"} <= set(info["params"])


def test_no_import_errors_in_the_dags_folder(airflow_home):
    result = subprocess.run([str(Path(sys.executable).parent / "airflow"), "dags", "list-import-errors", "--local"],
                            env=os.environ, capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    return configure_airflow(tmp_path_factory.mktemp("airflow"))


@pytest.fixture(scope="module")
def the_dag(airflow_home):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.get_dag(DAG_ID)


def run_dag(dag, ds: str, raw: Path, warehouse: Path, conf: dict | None = None):
    """One DAG run for ``ds`` on ``raw`` into ``warehouse``; returns the DagRun."""
    os.environ["AIRFLOW_VAR_RECSYS_RAW_DIR"] = str(raw)
    os.environ["AIRFLOW_VAR_RECSYS_WAREHOUSE"] = str(warehouse)
    logical = datetime.fromisoformat(ds).replace(tzinfo=UTC)
    return dag.test(logical_date=logical, run_conf={**FAST, **(conf or {})})


def states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def published(warehouse: Path, ds: str) -> pd.DataFrame:
    df = pd.read_parquet(warehouse / "recommendations" / f"ds={ds}")
    return df.sort_values(["user_id", "rank"]).reset_index(drop=True)


def sql_rows(warehouse: Path, ds: str) -> pd.DataFrame:
    import sqlite3

    with sqlite3.connect(warehouse / "recommendations.db") as db:
        df = pd.read_sql_query("SELECT * FROM recommendations WHERE ds = ? ORDER BY user_id, rank", db, params=[ds])
    return df


def truncated_drop(raw: Path, out: Path, ds: str) -> Path:
    """``raw`` with only the ratings and tags up to the end of ``ds`` (what existed then)."""
    shutil.copytree(raw, out)
    cutoff = datetime.fromisoformat(ds).replace(tzinfo=UTC).timestamp() + 86_400
    for name in ("ratings.csv", "tags.csv"):
        if (raw / name).exists():
            df = pd.read_csv(raw / name, dtype=str, keep_default_na=False)
            df[df.timestamp.astype("int64") < cutoff].to_csv(out / name, index=False)
    return out


@pytest.fixture(scope="module")
def drop(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("drop") / "raw"
    generate(raw, scale=0.002, seed=21, genome_tags=16)
    return raw


@pytest.fixture(scope="module")
def nightly(the_dag, drop, tmp_path_factory) -> dict:
    """The nightly run of LATE, then the same logical date again (one warehouse, ~1 min each)."""
    wh = tmp_path_factory.mktemp("nightly") / "wh"
    first = states(run_dag(the_dag, LATE, drop, wh))  # read now: the next run of the date clears them
    table, sql = published(wh, LATE), sql_rows(wh, LATE)
    again = states(run_dag(the_dag, LATE, drop, wh))
    return {"wh": wh, "first": first, "again": again, "table": table, "sql": sql}


@pytest.mark.slow
def test_nightly_run_publishes_every_user_and_reruns_identically(nightly):
    wh, table = nightly["wh"], nightly["table"]
    assert set(nightly["first"].values()) == {"success"}, nightly["first"]
    users = pd.read_parquet(wh / "features" / f"ds={LATE}" / "users")
    films = pd.read_parquet(wh / "features" / f"ds={LATE}" / "films")
    assert set(table.user_id) == set(users.user_id)
    assert (table.groupby("user_id").size() == FAST["top_n"]).all()
    seen = {(u, int(films.movie_id[f])) for u, fs in zip(users.user_id, users.film_idx) for f in fs}
    assert not seen & set(zip(table.user_id, table.movie_id))
    pd.testing.assert_frame_equal(nightly["sql"].drop(columns="ds"), table, check_dtype=False)
    record = json.loads((wh / "metrics" / f"ds={LATE}" / "run.json").read_text())
    assert record["scoring"]["rows"] == len(table) and record["training"]["validation"]["model"]["ndcg@10"] > 0

    assert set(nightly["again"].values()) == {"success"}, nightly["again"]
    pd.testing.assert_frame_equal(published(wh, LATE), table)
    pd.testing.assert_frame_equal(sql_rows(wh, LATE), nightly["sql"])


@pytest.mark.slow
def test_backfill_uses_only_ratings_up_to_its_date(the_dag, drop, nightly, tmp_path):
    wh = nightly["wh"]
    assert set(states(run_dag(the_dag, EARLY, drop, wh)).values()) == {"success"}
    early, late = published(wh, EARLY), published(wh, LATE)
    assert 0 < early.user_id.nunique() < late.user_id.nunique()  # side by side, fewer users back then
    pd.testing.assert_frame_equal(late, nightly["table"])

    past = tmp_path / "wh-past"
    truncated = truncated_drop(drop, tmp_path / "raw-past", EARLY)
    assert set(states(run_dag(the_dag, EARLY, truncated, past)).values()) == {"success"}
    pd.testing.assert_frame_equal(published(past, EARLY), early)


@pytest.mark.slow
def test_a_corrupt_drop_fails_the_run_and_keeps_the_published_table(the_dag, drop, nightly, tmp_path, capfd):
    wh = nightly["wh"]
    corrupt = tmp_path / "corrupt"
    shutil.copytree(drop, corrupt)
    ratings = (corrupt / "ratings.csv").read_text().splitlines()
    (corrupt / "ratings.csv").write_text("\n".join(["userId,movieId,stars,timestamp", *ratings[1:]]) + "\n")
    got = states(run_dag(the_dag, LATE, corrupt, wh))
    assert got["ingest"] == "failed" and got.get("publish") != "success", got
    logged = capfd.readouterr().out  # the task logs (spark-submit's output included)
    assert "ERROR: ratings.csv: missing required column(s) rating" in logged, logged[-3000:]
    pd.testing.assert_frame_equal(published(wh, LATE), nightly["table"])
    pd.testing.assert_frame_equal(sql_rows(wh, LATE), nightly["sql"])
