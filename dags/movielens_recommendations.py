"""Nightly MovieLens recommendations: validate -> ingest -> features -> train -> score -> check -> publish.

``score`` runs in one process (``jobs/score.py``, GPU when present), or on the executors of
``spark_default`` (``score_spark``, ``jobs/score_spark.py``) when the run's
``scoring_engine`` Param is ``spark``: a branch picks one, the other is skipped.

The DAG only wires the ``jobs/`` entry points together; what each step does lives in
``recsys_core``. Nothing heavy is imported at parse time (no torch, Spark or pandas; from
recsys_core only ``recsys_core.defaults``, the Params' defaults and bounds, which imports
nothing).

Time: a data-interval timetable on ``30 2 * * *`` (UTC). The run that fires at 02:30 UTC
on day D has the data interval [D-1 02:30, D 02:30) and the logical date D-1 02:30, so
``ds`` (the ``DS`` template every task gets) is D-1: the whole UTC day before, complete
since midnight. A run with a logical date processes that date's day; a manual run
without one (a plain ``airflow dags trigger``) processes the last complete UTC day before
it was triggered (``run_after`` - 1 day).

No overlap: every task that writes to the warehouse is in the one-slot pool
``recsys_warehouse`` (scheduled runs, manual runs and backfills alike), and every job
also holds the warehouse's writer lock (``recsys_core.lock``) for its whole run, which
stops a job run by hand or from another deployment as well.

Settings, each from an Airflow Variable, else the environment, else a local default
(the project checkout this file sits in):

=====================  ========================  ===========================================
Variable               environment               default
=====================  ========================  ===========================================
``recsys_raw_dir``     ``RECSYS_RAW_DIR``        ``<project>/data/raw`` (the MovieLens CSVs)
``recsys_warehouse``   ``RECSYS_WAREHOUSE``      ``<project>/warehouse``
=====================  ========================  ===========================================

The SQL sink is the Airflow Connection named by the ``sql_conn_id`` param (``recsys_sql``),
resolved inside the publish task at run time and handed to the job in its environment
only. Without that connection: the worker's ``RECSYS_SQL_URL``, else SQLite in the
warehouse.

Parse-time environment: ``RECSYS_JOBS_DIR`` (``<project>/jobs``), ``RECSYS_PYTHON`` (the
Python running Airflow), ``RECSYS_SPARK_SUBMIT`` (``spark-submit`` beside that Python, else
on PATH), ``RECSYS_SPARK_DRIVER_MEMORY`` (4g), ``RECSYS_SPARK_SHUFFLE_PARTITIONS`` (Spark's
default), ``RECSYS_TASK_RETRIES`` (2), ``RECSYS_SPARK_LOG4J`` (``<project>/conf/log4j2.properties``:
Spark's own lines at WARN; ``RECSYS_SPARK_LOG_LEVEL=INFO`` at run time shows them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import Asset, CronDataIntervalTimetable, Param, dag, task

from recsys_core.defaults import RUN_PARAMS, SQL_CONN_ID

PROJECT = Path(__file__).resolve().parents[1]
PYTHON = os.environ.get("RECSYS_PYTHON", sys.executable)
JOBS = os.environ.get("RECSYS_JOBS_DIR", str(PROJECT / "jobs"))
_beside_python = Path(PYTHON).parent / "spark-submit"
SPARK_SUBMIT = os.environ.get("RECSYS_SPARK_SUBMIT") or (
    str(_beside_python) if _beside_python.exists() else shutil.which("spark-submit") or "spark-submit"
)
DRIVER_MEMORY = os.environ.get("RECSYS_SPARK_DRIVER_MEMORY", "4g")
RETRIES = int(os.environ.get("RECSYS_TASK_RETRIES", "2"))
# Small drops (tests, samples) run faster with few shuffle partitions; unset = Spark's own.
SPARK_CONF = {"spark.sql.shuffle.partitions": os.environ["RECSYS_SPARK_SHUFFLE_PARTITIONS"]} if (
    os.environ.get("RECSYS_SPARK_SHUFFLE_PARTITIONS")) else {}  # fmt: skip

# Spark's own logging at WARN (conf/log4j2.properties; RECSYS_SPARK_LOG_LEVEL=INFO in the
# worker's environment turns it back up): the task log shows the job's lines, not Spark's.
# A deployment without the file (or with RECSYS_SPARK_LOG4J="") keeps Spark's default.
_log4j = os.environ.get("RECSYS_SPARK_LOG4J", str(PROJECT / "conf" / "log4j2.properties"))
LOG4J_CONF = {f"spark.{side}.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{_log4j}"
              for side in ("driver", "executor")} if _log4j and Path(_log4j).is_file() else {}  # fmt: skip

SCHEDULE = CronDataIntervalTimetable("30 2 * * *", timezone="UTC")  # fires 02:30 UTC on D for ds = D-1
POOL = "recsys_warehouse"  # one slot: no two writing tasks of any runs of this DAG at once


def lookup(variable: str, env: str, default: str) -> str:
    """Jinja (without braces): the Airflow Variable, else the environment value, else ``default``."""
    fallback = os.environ.get(env, default).replace("\\", "\\\\").replace("'", "\\'")
    return f"var.value.get('{variable}', '{fallback}')"


RAW = "{{ " + lookup("recsys_raw_dir", "RECSYS_RAW_DIR", str(PROJECT / "data" / "raw")) + " }}"
WAREHOUSE = "{{ " + lookup("recsys_warehouse", "RECSYS_WAREHOUSE", str(PROJECT / "warehouse")) + " }}"
# The processed day: the logical date's day; without a logical date (a manual run
# triggered without one), the last complete UTC day before the run was triggered.
DS = "{{ ds if ds is defined else (dag_run.run_after - macros.timedelta(days=1)).strftime('%Y-%m-%d') }}"


def param(name: str) -> str:
    """An integer Param as the jobs get it: an integral float such as 10.0 becomes 10."""
    return "{{ params." + name + " | int }}"


# Downstream DAGs schedule on this: one event per published ds.
RECOMMENDATIONS = Asset(name="movielens_recommendations")

DOC = """
### MovieLens recommendations (nightly)

Turns the MovieLens drop into the **top-N unseen films for every user** and publishes
them as `recommendations` (Parquet `recommendations/ds=…/` in the warehouse, and the SQL
table with its `recommendations_latest` view).

**Time.** The run that fires at 02:30 UTC on day D processes `ds` = D − 1, the whole UTC
day before (ratings with `timestamp <` D 00:00). Trigger with a logical date to process
that date; without one, the last complete UTC day is processed. Backfill the days A … B:
`airflow backfill create --dag-id movielens_recommendations --from-date A --to-date B+1`
(logical dates are 02:30 of each processed day, so `--to-date` names the day after the
last one, or `BT02:30`).

| task | does | on failure |
|---|---|---|
| `validate` | the date and every Param (seconds, before any heavy work) | fix the Param and trigger again |
| `ingest` | validates the raw CSVs as of `ds` into `snapshot/ds=…`; bad rows go to `quarantine/ds=…` | missing file/column or too many rejects: fix the drop, clear the task |
| `build_features` | films and user vectors, `features/ds=…` | |
| `train` | film + user autoencoders (`gpu` queue), `models/ds=…`, `embeddings/ds=…` | |
| `choose_scorer` | picks `score` or `score_spark` by the `scoring_engine` Param | |
| `score` | top-N unseen films for every user into a staging partition (one process) | |
| `score_spark` | the same rows from the executors of `spark_default` (`scoring_engine=spark`) | |
| `check` | quality gate: every user, no seen film, ranks, scores, the model in `models/` scored the rows, it beats popularity | nothing is published; the report names each broken contract and the task to re-run |
| `publish` | swaps the partition in and replaces that `ds` in SQL (connection `recsys_sql`) in one transaction; emits the Asset | the previous table stays as it was |
| `record_metrics` | counts, validation metrics, durations: `metrics/ds=…/run.json` | |

Runs never overlap on the warehouse: every writing task is in the one-slot pool
`recsys_warehouse`, and every job holds the warehouse lock while it runs. Re-running a
date replaces its partitions (no duplicates).
"""


class WarehouseSparkSubmitOperator(SparkSubmitOperator):
    """``spark-submit`` while this task holds the warehouse's writer lock.

    The Spark driver runs as a child of this task (client mode) and inherits the lock.
    """

    def execute(self, context):
        from recsys_core.lock import warehouse_lock

        args = [str(a) for a in self.application_args]
        with warehouse_lock(args[args.index("--warehouse") + 1], job=self.task_id, ds=args[args.index("--ds") + 1]):
            return super().execute(context)


def spark_job(task_id: str, script: str, args: list[str], timeout: timedelta) -> SparkSubmitOperator:
    return WarehouseSparkSubmitOperator(
        task_id=task_id,
        application=f"{JOBS}/{script}",
        application_args=args,
        conn_id="spark_default",
        spark_binary=SPARK_SUBMIT,
        driver_memory=DRIVER_MEMORY,
        conf={**SPARK_CONF, **LOG4J_CONF},
        name=f"recsys-{task_id}-{DS}",
        env_vars={"PYSPARK_PYTHON": PYTHON, "PYSPARK_DRIVER_PYTHON": PYTHON},
        execution_timeout=timeout,
        pool=POOL,
    )


def python_job(task_id: str, script: str, args: list[str], timeout: timedelta, **kwargs) -> BashOperator:
    """``python jobs/<script> <args>`` (the job takes the warehouse lock); args may hold Jinja,
    so they are double-quoted, not escaped."""
    quoted = " ".join(f'"{a}"' for a in args)
    return BashOperator(
        task_id=task_id,
        bash_command=f'"{PYTHON}" "{JOBS}/{script}" {quoted}',
        execution_timeout=timeout,
        append_env=True,
        pool=POOL,
        **kwargs,
    )


@task.branch(execution_timeout=timedelta(minutes=5))
def choose_scorer(engine: str) -> str:
    """``score`` (one process) or ``score_spark`` (Spark executors), by the ``scoring_engine`` Param."""
    return "score_spark" if engine == "spark" else "score"


@task(execution_timeout=timedelta(minutes=5))
def validate(run_ds: str, raw: str, warehouse: str, params: dict | None = None) -> dict:
    """The date and every Param, checked in seconds before ingest starts (``recsys_core.run_params``)."""
    from recsys_core.run_params import validate_run

    return validate_run(run_ds, raw, warehouse, dict(params or {}))


def sql_url(conn_id: str) -> str | None:
    """The sink URL of the Airflow Connection ``conn_id``, resolved now (in the worker).

    None when the default connection does not exist (the job then takes the worker's
    ``RECSYS_SQL_URL``, else SQLite in the warehouse); a named connection must exist.
    """
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    from recsys_core.publish.connection import sql_url_from_connection

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        if conn_id != SQL_CONN_ID:
            raise
        print(f"no Airflow connection {conn_id!r}: publishing to $RECSYS_SQL_URL of the worker, else SQLite")
        return None
    return sql_url_from_connection(conn_id, conn.conn_type, conn.host, conn.port, conn.login, conn.password,
                                   conn.schema, conn.extra_dejson)  # fmt: skip


@task(execution_timeout=timedelta(hours=1), pool=POOL, outlets=[RECOMMENDATIONS])
def publish(warehouse: str, run_ds: str, keep: str, sql_conn_id: str) -> None:
    """``jobs/publish.py``, with the SQL sink's URL from the connection in the child's environment only.

    Nothing secret is an argument of this task (its rendered fields hold the warehouse,
    the date, ``keep`` and the connection id), and the job logs the URL masked.
    """
    env = dict(os.environ)
    url = sql_url(sql_conn_id)
    if url:
        env["RECSYS_SQL_URL"] = url
    cmd = [PYTHON, f"{JOBS}/publish.py", "--warehouse", warehouse, "--ds", run_ds, "--keep", keep]
    print("running", " ".join(cmd), flush=True)
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as job:
        errors = []
        for line in job.stdout:
            print(line, end="", flush=True)
            if line.startswith("ERROR:"):
                errors.append(line.strip())
    if job.returncode != 0:
        raise RuntimeError(f"jobs/publish.py exited {job.returncode}: {errors[-1] if errors else 'see the log above'}")


@task(execution_timeout=timedelta(minutes=5), pool=POOL)
def record_metrics(warehouse: str, run_ds: str) -> dict:
    """Row counts, users, validation metrics and durations of this run, kept per ds."""
    from recsys_core.lock import warehouse_lock
    from recsys_core.run_metrics import record_run_metrics

    with warehouse_lock(warehouse, job="record_metrics", ds=run_ds):
        return record_run_metrics(warehouse, run_ds)


@dag(
    dag_id="movielens_recommendations",
    description="Nightly top-N unseen MovieLens films for every user",
    doc_md=DOC,
    schedule=SCHEDULE,
    start_date=datetime(1995, 1, 1),  # MovieLens starts in 1995: any date since can be backfilled
    catchup=False,
    max_active_runs=1,  # fewer idle runs; the pool and the warehouse lock are what prevent overlap
    tags=["recsys", "movielens", "spark", "torch"],
    default_args={
        "owner": "recsys",
        "retries": RETRIES,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timedelta(hours=1),
    },
    # every Param's default, type and bounds come from recsys_core.defaults (the jobs' --help
    # and the first task's checks read the same), which imports nothing at parse time
    params={name: Param(spec.default, type=spec.kind, description=spec.description, **spec.schema())
            for name, spec in RUN_PARAMS.items()},
)
def movielens_recommendations():
    checked = validate(DS, RAW, WAREHOUSE)
    ingest = spark_job(
        "ingest", "ingest.py",
        ["--raw", RAW, "--warehouse", WAREHOUSE, "--ds", DS, "--encoding", "{{ params.encoding }}",
         "--layout", "{{ params.layout }}"],
        timedelta(hours=1),
    )  # fmt: skip
    features = spark_job(
        "build_features", "features.py",
        ["--warehouse", WAREHOUSE, "--ds", DS, "--min-film-ratings", param("min_film_ratings")],
        timedelta(hours=1),
    )  # fmt: skip
    train = python_job(
        "train", "train.py",
        ["--warehouse", WAREHOUSE, "--ds", DS, "--epochs", param("max_epochs"),
         "--max-minutes", "{{ params.max_minutes }}", "--seed", param("seed")],
        timedelta(hours=2), queue="gpu",
    )  # fmt: skip
    score_args = ["--warehouse", WAREHOUSE, "--ds", DS, "--top-n", param("top_n")]
    score = python_job("score", "score.py", score_args, timedelta(hours=1), queue="gpu")
    score_spark = spark_job("score_spark", "score_spark.py", score_args, timedelta(hours=1))
    check = python_job(
        "check", "check.py", ["--warehouse", WAREHOUSE, "--ds", DS, "--min-model-ratio", "{{ params.min_model_ratio }}"],
        timedelta(minutes=30), trigger_rule="none_failed_min_one_success",  # after whichever scorer ran
    )  # fmt: skip
    published = publish(WAREHOUSE, DS, param("keep"), "{{ params.sql_conn_id }}")
    checked >> ingest >> features >> train >> choose_scorer("{{ params.scoring_engine }}") >> [score, score_spark]
    [score, score_spark] >> check >> published >> record_metrics(WAREHOUSE, DS)


recommendations_dag = movielens_recommendations()
