"""The Airflow DAG: integrity, time semantics, Params, pools and secrets through Airflow's own
API, and whole runs through ``dag.test()`` with real Spark and torch.

The tests share one Airflow home (SQLite metadata DB in a temp dir) and point the DAG at
each test's drop and warehouse through Airflow Variables given as environment variables
(``AIRFLOW_VAR_*``), the way an operator would set them. Timetable, backfill planning,
trigger-time Param validation and rendered templates go through Airflow's scheduler-side
code without running a task; the scheduler's own queueing shows the pool at work.
"""

from __future__ import annotations

import ast
import contextlib
import io
import itertools
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import pytest

from recsys_core.data.generator import generate

from .airflow_env import configure_airflow
from .conftest import ROOT

DAG_ID = "movielens_recommendations"
# the tasks a run with the local scoring engine runs, in order; score_spark is the other branch
TASKS = ["validate", "ingest", "build_features", "train", "choose_scorer", "score", "check", "publish",
         "record_metrics"]  # fmt: skip
ALL_TASKS = [*TASKS, "score_spark"]
WRITERS = [t for t in ALL_TASKS if t not in ("validate", "choose_scorer")]  # the others write the warehouse
DOWNSTREAM = {**{a: [b] for a, b in itertools.pairwise(TASKS)}, "choose_scorer": ["score", "score_spark"],
              "score_spark": ["check"], "record_metrics": []}  # fmt: skip
POOL = "recsys_warehouse"
LATE, EARLY = "2018-09-30", "2012-06-30"
# scoring_engine named: dag.test() keeps a run's Params on the DAG object for the next run
FAST = {"max_epochs": 12, "top_n": 10, "min_model_ratio": 1.0, "scoring_engine": "local"}

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
    "heavy": sorted(m for m in ("torch", "pyspark", "pandas", "numpy") if m in sys.modules),
    "recsys_core": sorted(m for m in sys.modules if m.startswith("recsys_core")),
    "tasks": {t.task_id: {"retries": t.retries, "backoff": bool(t.retry_exponential_backoff),
                          "timeout": t.execution_timeout.total_seconds() if t.execution_timeout else None,
                          "pool": t.pool, "queue": t.queue, "downstream": sorted(t.downstream_task_ids),
                          "outlets": [getattr(o, "name", None) for o in t.outlets]}
              for t in dag.tasks},
    "timetable": type(dag.timetable).__name__,
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
    assert info["recsys_core"] == ["recsys_core", "recsys_core.defaults"]  # the Params' defaults only
    tasks = info["tasks"]
    assert sorted(tasks) == sorted(ALL_TASKS)
    assert {name: t["downstream"] for name, t in tasks.items()} == DOWNSTREAM
    for name, t in tasks.items():
        assert t["retries"] >= 1 and t["backoff"] and t["timeout"], name
        assert (t["pool"] == POOL) == (name in WRITERS), (name, t["pool"])  # one slot for every writer
    assert tasks["train"]["queue"] == "gpu" and tasks["score"]["queue"] == "gpu"
    assert tasks["publish"]["outlets"] == ["movielens_recommendations"]
    assert info["timetable"] == "CronDataIntervalTimetable"  # logical date = start of the interval, not the firing
    assert info["schedule"] == "30 2 * * *" and info["tz"] == "UTC" and info["catchup"] is False and info["max_active_runs"] == 1
    assert info["owner"] == "recsys" and info["doc"] and "recsys" in info["tags"]
    assert {"top_n", "min_film_ratings", "max_epochs", "seed", "sql_conn_id", "keep"} <= set(info["params"])
    assert "sql_url" not in info["params"]  # a URL with a password would be stored with the run


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


def nightly_logical_date(dag, ds: str) -> datetime:
    """The logical date the scheduler gives the nightly run that processes ``ds``."""
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import DataInterval, TimeRestriction

    day = datetime.fromisoformat(ds).replace(tzinfo=UTC)
    before = DataInterval(day - timedelta(days=1) + timedelta(hours=2, minutes=30), day + timedelta(hours=2, minutes=30))
    info = coerce_to_core_timetable(dag.timetable).next_dagrun_info(
        last_automated_data_interval=before, restriction=TimeRestriction(earliest=None, latest=None, catchup=True))
    return info.logical_date


def point_at(raw: Path, warehouse: Path) -> None:
    os.environ["AIRFLOW_VAR_RECSYS_RAW_DIR"] = str(raw)
    os.environ["AIRFLOW_VAR_RECSYS_WAREHOUSE"] = str(warehouse)
    for name in ("RECSYS_SQL_URL", "AIRFLOW_CONN_RECSYS_SQL"):  # the sink: SQLite in the warehouse
        os.environ.pop(name, None)


def run_dag(dag, ds: str, raw: Path, warehouse: Path, conf: dict | None = None):
    """The nightly run that processes ``ds`` (logical date from the timetable) on ``raw`` into ``warehouse``."""
    point_at(raw, warehouse)
    return dag.test(logical_date=nightly_logical_date(dag, ds), run_conf={**FAST, **(conf or {})})


# ---------------------------------------------------------------- through Airflow's API, no task run


@pytest.fixture(scope="module")
def registered(airflow_home):
    """The DAG parsed and written to the metadata DB, as the dag processor does."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    sync_bag_to_db(bag, bundle_name="dags-folder", bundle_version=None)
    return bag.get_dag(DAG_ID)


def rendered(task_id: str, run: str) -> dict[str, str]:
    """``airflow tasks render`` of ``task_id`` in ``run`` (a run id, or a logical date): field -> text."""
    from argparse import Namespace

    from airflow.cli.commands import task_command
    from airflow.dag_processing.dagbag import DagBag

    fresh = DagBag(dag_folder=str(ROOT / "dags")).get_dag(DAG_ID)  # rendering changes the task objects
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        task_command.task_render(Namespace(dag_id=DAG_ID, task_id=task_id, map_index=-1, logical_date_or_run_id=run,
                                           bundle_name=None, verbose=False), dag=fresh)  # fmt: skip
    fields = {}
    for block in out.getvalue().split("# property: ")[1:]:
        name, _, rest = block.partition("\n")
        fields[name.strip()] = rest.split("# ----------------------------------------------------------\n", 1)[-1].strip()
    return fields


def ds_of(task_id: str, run: str) -> str:
    """The processed day a task of ``run`` renders: its ``--ds``, or the ds argument of a Python task."""
    fields = rendered(task_id, run)
    if "op_args" in fields:  # validate(ds, raw, wh), publish(wh, ds, …), record_metrics(wh, ds)
        args = ast.literal_eval(fields["op_args"])
        return args[0] if task_id == "validate" else args[1]
    words = fields.get("bash_command", "").replace('"', "").split() or ast.literal_eval(fields["application_args"])
    assert words.count("--ds") == 1, fields
    return words[words.index("--ds") + 1]


@contextlib.contextmanager
def triggered_runs():
    """Yield ``trigger(run_after, conf, logical_date)``; every run and backfill it made is deleted after."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.models.backfill import Backfill, BackfillDagRun
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType
    from sqlalchemy import delete, select

    with create_session() as session:
        before = set(session.scalars(select(DagRun.id)))

    def trigger(run_after: datetime, conf: dict | None = None, logical_date: datetime | None = None):
        return trigger_dag(DAG_ID, triggered_by=DagRunTriggeredByType.CLI, run_after=run_after, conf=conf,
                           logical_date=logical_date)  # fmt: skip

    try:
        yield trigger
    finally:
        with create_session() as session:
            made = [r for r in session.scalars(select(DagRun)) if r.id not in before]
            for run in made:
                session.execute(delete(TaskInstance).where(TaskInstance.run_id == run.run_id))
            session.execute(delete(BackfillDagRun))
            for run in made:
                session.delete(run)
            session.flush()
            session.execute(delete(Backfill))


def test_the_0230_run_processes_the_whole_previous_utc_day(registered):
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.timetables.base import TimeRestriction
    from airflow.utils.session import create_session

    from recsys_core.dates import as_of_cutoff

    with create_session() as session:
        timetable = SerializedDagModel.get_dag(DAG_ID, session=session).timetable
    first = timetable.next_dagrun_info(last_automated_data_interval=None,
                                       restriction=TimeRestriction(datetime(2018, 9, 30, tzinfo=UTC), None, True))  # fmt: skip
    fires, logical = first.run_after, first.logical_date
    assert fires == datetime(2018, 10, 1, 2, 30, tzinfo=UTC)  # 02:30 UTC on D ...
    assert logical == datetime(2018, 9, 30, 2, 30, tzinfo=UTC)  # ... for the day D-1
    ds = ds_of("ingest", logical.isoformat())
    assert ds == "2018-09-30"
    assert as_of_cutoff(ds) == datetime(2018, 10, 1, tzinfo=UTC).timestamp() <= fires.timestamp()  # complete day
    for task_id in WRITERS:  # one ds in every task's templates
        assert ds_of(task_id, logical.isoformat()) == ds, task_id


def test_a_backfill_processes_each_day_once_as_the_nightly_runs_do(registered):
    from airflow.models.backfill import ReprocessBehavior, _do_dry_run
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.timetables.base import TimeRestriction
    from airflow.utils.session import create_session

    with create_session() as session:  # what `airflow backfill create --dry-run` plans
        planned = [i.logical_date for i in _do_dry_run(
            dag_id=DAG_ID, from_date=datetime(2018, 9, 27, tzinfo=UTC), to_date=datetime(2018, 10, 1, tzinfo=UTC),
            reverse=False, reprocess_behavior=ReprocessBehavior.NONE, session=session)]  # fmt: skip
        timetable = SerializedDagModel.get_dag(DAG_ID, session=session).timetable
    assert [d.strftime("%Y-%m-%d") for d in planned] == ["2018-09-27", "2018-09-28", "2018-09-29", "2018-09-30"]
    nightly, info = [], None
    restriction = TimeRestriction(datetime(2018, 9, 27, tzinfo=UTC), datetime(2018, 9, 30, 23, tzinfo=UTC), True)
    while info := timetable.next_dagrun_info(last_automated_data_interval=info and info.data_interval,
                                             restriction=restriction):  # fmt: skip
        nightly.append(info.logical_date)
    assert planned == nightly  # the same logical dates, so the same ds and the same templates
    assert ds_of("score", planned[-1].isoformat()) == "2018-09-30"


def test_a_manual_run_without_logical_date_processes_the_last_complete_day(registered):
    with triggered_runs() as trigger:
        for run_after, ds in ((datetime(2018, 10, 2, 9, tzinfo=UTC), "2018-10-01"),
                              (datetime(2018, 10, 3, 0, 5, tzinfo=UTC), "2018-10-02")):  # fmt: skip
            run = trigger(run_after)
            assert run.logical_date is None  # what a plain `airflow dags trigger` makes in Airflow 3
            for task_id in ("ingest", "train", "check"):
                assert ds_of(task_id, run.run_id) == ds, task_id
            assert rendered("publish", run.run_id)["op_args"].count(ds) == 1
        run = trigger(datetime(2018, 10, 5, 9, tzinfo=UTC), logical_date=datetime(2018, 7, 1, tzinfo=UTC))
        assert ds_of("ingest", run.run_id) == "2018-07-01"  # a logical date names the day to process


def test_integer_params_are_checked_at_trigger_and_integral_floats_reach_the_jobs_as_integers(registered):
    from airflow.sdk.exceptions import ParamValidationError

    with triggered_runs() as trigger:
        for bad in ({"top_n": 10.5}, {"top_n": "10"}, {"top_n": 0}, {"keep": True}, {"seed": -1},
                    {"sql_conn_id": "no spaces"}):  # fmt: skip
            with pytest.raises(ParamValidationError):
                trigger(datetime(2018, 10, 2, 9, tzinfo=UTC), conf=bad)
        run = trigger(datetime(2018, 10, 2, 10, tzinfo=UTC), conf={"top_n": 10.0, "max_epochs": 3.0, "keep": 7.0})
        assert '"--top-n" "10"' in rendered("score", run.run_id)["bash_command"]
        assert '"--epochs" "3"' in rendered("train", run.run_id)["bash_command"]
        assert "'7'" in rendered("publish", run.run_id)["op_args"]


def test_scheduled_manual_and_backfill_runs_never_run_writing_tasks_at_once(registered):
    """The scheduler's own queueing: four runs' ingest tasks are ready, one is queued."""
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.models.backfill import _create_backfill
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.models.pool import Pool
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from sqlalchemy import select, update

    assert Pool.get_pool(POOL).slots == 1
    with triggered_runs() as trigger:
        manual = trigger(datetime(2018, 10, 2, 9, tzinfo=UTC))
        _create_backfill(dag_id=DAG_ID, from_date=datetime(2018, 9, 27, tzinfo=UTC),
                         to_date=datetime(2018, 9, 30, tzinfo=UTC), max_active_runs=10, reverse=False,
                         dag_run_conf=None, triggering_user_name="test")  # fmt: skip
        with create_session() as session:
            session.execute(update(DagModel).where(DagModel.dag_id == DAG_ID).values(is_paused=False))
            runs = [r for r in session.scalars(select(DagRun).where(DagRun.dag_id == DAG_ID))
                    if r.run_id == manual.run_id or r.backfill_id is not None]  # fmt: skip
            assert len(runs) == 4 and {str(r.run_type) for r in runs} == {"manual", "backfill"}
            ids = [r.run_id for r in runs]
            session.execute(update(DagRun).where(DagRun.run_id.in_(ids)).values(state=DagRunState.RUNNING))
            session.execute(update(TaskInstance).where(TaskInstance.run_id.in_(ids), TaskInstance.task_id == "ingest")
                            .values(state=TaskInstanceState.SCHEDULED))  # validate passed in all four  # fmt: skip
        try:
            runner = SchedulerJobRunner(job=Job())
            with create_session() as session:
                queued = runner._executable_task_instances_to_queued(max_tis=32, session=session)
                assert len(queued) == 1, queued
                session.rollback()
            Pool.create_or_update_pool(POOL, slots=4, description="control", include_deferred=False)
            with create_session() as session:  # the pool is what held the other three back
                assert len(runner._executable_task_instances_to_queued(max_tis=32, session=session)) == 4
                session.rollback()
        finally:
            Pool.create_or_update_pool(POOL, slots=1, description="one writer per warehouse", include_deferred=False)
            with create_session() as session:
                session.execute(update(DagModel).where(DagModel.dag_id == DAG_ID).values(is_paused=True))



def states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def succeeded(got: dict[str, str], scorer: str = "score") -> bool:
    """Every task succeeded but the scorer the branch did not choose, which was skipped."""
    other = "score_spark" if scorer == "score" else "score"
    return got.get(other) == "skipped" and {t: s for t, s in got.items() if t != other} == dict.fromkeys(
        set(got) - {other}, "success")


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
    """The nightly run of LATE (~1 min)."""
    wh = tmp_path_factory.mktemp("nightly") / "wh"
    run = run_dag(the_dag, LATE, drop, wh)
    first = states(run)  # read now: the next run of the date clears them
    return {"wh": wh, "run_id": run.run_id, "first": first, "table": published(wh, LATE), "sql": sql_rows(wh, LATE)}


def stored_rendered_fields(run_id: str) -> dict[str, dict]:
    """What Airflow stored as the rendered templates of each task of a run (the UI's "Rendered Template")."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as RTIF
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(RTIF).where(RTIF.dag_id == DAG_ID, RTIF.run_id == run_id)).all()
        return {r.task_id: r.rendered_fields for r in rows}


@pytest.mark.slow
def test_nightly_run_publishes_every_user(nightly):
    wh, table = nightly["wh"], nightly["table"]
    assert succeeded(nightly["first"]), nightly["first"]
    users = pd.read_parquet(wh / "features" / f"ds={LATE}" / "users")
    films = pd.read_parquet(wh / "features" / f"ds={LATE}" / "films")
    assert set(table.user_id) == set(users.user_id)
    assert (table.groupby("user_id").size() == FAST["top_n"]).all()
    seen = {(u, int(films.movie_id[f])) for u, fs in zip(users.user_id, users.film_idx) for f in fs}
    assert not seen & set(zip(table.user_id, table.movie_id))
    pd.testing.assert_frame_equal(nightly["sql"].drop(columns="ds"), table, check_dtype=False)
    record = json.loads((wh / "metrics" / f"ds={LATE}" / "run.json").read_text())
    assert record["scoring"]["rows"] == len(table) and record["training"]["validation"]["model"]["ndcg@10"] > 0
    fields = stored_rendered_fields(nightly["run_id"])
    assert ["--ds", LATE] == [a for a in fields["ingest"]["application_args"] if a in ("--ds", LATE)]
    assert sorted(fields) == sorted(TASKS)
    lock = wh / "_lock" / "warehouse.lock"  # every writer took the warehouse lock, and let it go
    assert lock.exists() and lock.read_text() == ""


SECRET = "p@ss:w/rd% 1x"  # needs quoting in a URL


def sink_connection(request, tmp_path: Path) -> tuple[dict, object]:
    """An Airflow connection to a fresh sink with a password, and a reader of its rows.

    PostgreSQL with its own role when the test server is available, else a SQLite file.
    """
    try:
        server = request.getfixturevalue("postgres_server")
    except pytest.skip.Exception:
        server = None
    if server is None:
        path = tmp_path / "conn-sink.db"
        return {"conn_type": "sqlite", "host": str(path)}, lambda ds: sql_rows_at(f"sqlite:///{path}", ds)
    import psycopg
    from psycopg import sql

    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE recsys_dag LOGIN PASSWORD {}").format(sql.Literal(SECRET)))
        conn.execute("CREATE DATABASE recsys_dag OWNER recsys_dag")
    connection = {"conn_type": "postgres", "host": "127.0.0.1", "port": server.port, "login": "recsys_dag",
                  "password": SECRET, "schema": "recsys_dag"}  # fmt: skip
    return connection, lambda ds: sql_rows_at(server.url("recsys_dag"), ds)


def sql_rows_at(url: str, ds: str) -> pd.DataFrame:
    query = ("SELECT user_id, rank, movie_id, score, source, model_version FROM recommendations "
             f"WHERE ds = '{ds}' ORDER BY user_id, rank")  # fmt: skip
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(url[len("sqlite:///") :]) as db:
            return pd.read_sql_query(query, db)
    import psycopg

    with psycopg.connect(url) as conn:
        return pd.DataFrame(conn.execute(query).fetchall(), columns=["user_id", "rank", "movie_id", "score",
                                                                      "source", "model_version"])  # fmt: skip


@pytest.mark.slow
def test_a_manual_run_without_date_reruns_the_last_day_identically_into_the_connections_sink(
    the_dag, drop, nightly, airflow_home, spark_cluster, request, tmp_path, capfd
):
    """Also the scale-out path: this rerun's Spark jobs go to a standalone cluster through
    spark_default, and it scores on the cluster's executors (scoring_engine spark)."""
    wh = nightly["wh"]
    connection, sink_rows = sink_connection(request, tmp_path)
    point_at(drop, wh)
    os.environ["AIRFLOW_CONN_RECSYS_SQL"] = json.dumps(connection)
    local_spark = os.environ["AIRFLOW_CONN_SPARK_DEFAULT"]
    os.environ["AIRFLOW_CONN_SPARK_DEFAULT"] = json.dumps(
        {"conn_type": "spark", "host": "spark://127.0.0.1", "port": spark_cluster.port})
    try:  # what a plain `airflow dags trigger` makes: no logical date; the day before it ran is processed
        run = the_dag.test(logical_date=None, run_after=datetime.fromisoformat(LATE).replace(tzinfo=UTC)
                           + timedelta(days=1, hours=9), run_conf={**FAST, "scoring_engine": "spark"})  # fmt: skip
    finally:
        os.environ.pop("AIRFLOW_CONN_RECSYS_SQL")
        os.environ["AIRFLOW_CONN_SPARK_DEFAULT"] = local_spark
    assert run.logical_date is None
    got = states(run)
    assert succeeded(got, scorer="score_spark"), got
    scoring = json.loads((wh / "metrics" / f"ds={LATE}" / "run.json").read_text())["scoring"]
    assert scoring.get("engine") == "spark" and scoring.get("master", "").startswith("spark://127.0.0.1"), scoring
    pd.testing.assert_frame_equal(published(wh, LATE), nightly["table"])  # the same rows again
    pd.testing.assert_frame_equal(sql_rows(wh, LATE), nightly["sql"])  # the SQLite default was not used
    pd.testing.assert_frame_equal(sink_rows(LATE), nightly["table"], check_dtype=False)

    logged = capfd.readouterr()
    fields = stored_rendered_fields(run.run_id)
    assert sorted(fields) == sorted(set(ALL_TASKS) - {"score"}) and LATE in fields["publish"]["op_args"]
    secrets = {SECRET, quote(SECRET, safe="")}
    stored = (airflow_home / "airflow.db").read_bytes() + b"".join(
        p.read_bytes() for p in airflow_home.rglob("*") if p.is_file() and p.suffix in (".log", ".json"))
    if connection["conn_type"] == "postgres":
        assert "publishing" in logged.out + logged.err  # the job's own log lines are in the task log
        for secret in secrets:  # not in a template, a stored rendered field, a command line or a log
            assert secret not in json.dumps(fields) and secret not in logged.out + logged.err, secret
            assert secret.encode() not in stored, secret


@pytest.mark.slow
def test_backfill_uses_only_ratings_up_to_its_date(the_dag, drop, nightly, tmp_path):
    wh = nightly["wh"]
    assert succeeded(states(run_dag(the_dag, EARLY, drop, wh)))
    early, late = published(wh, EARLY), published(wh, LATE)
    assert 0 < early.user_id.nunique() < late.user_id.nunique()  # side by side, fewer users back then
    pd.testing.assert_frame_equal(late, nightly["table"])

    past = tmp_path / "wh-past"
    truncated = truncated_drop(drop, tmp_path / "raw-past", EARLY)
    assert succeeded(states(run_dag(the_dag, EARLY, truncated, past)))
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
