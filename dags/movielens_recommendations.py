"""Nightly MovieLens recommendations: ingest -> features -> train -> score -> check -> publish.

The DAG only wires the ``jobs/`` entry points together; what each step does lives in
``recsys_core``. Nothing heavy is imported at parse time (no torch, Spark or recsys_core).

Settings, each from an Airflow Variable, else the environment, else a local default
(the project checkout this file sits in):

=====================  ========================  ===========================================
Variable               environment               default
=====================  ========================  ===========================================
``recsys_raw_dir``     ``RECSYS_RAW_DIR``        ``<project>/data/raw`` (the MovieLens CSVs)
``recsys_warehouse``   ``RECSYS_WAREHOUSE``      ``<project>/warehouse``
``recsys_sql_url``     ``RECSYS_SQL_URL``        SQLite ``recommendations.db`` in the warehouse
                                                 (the ``sql_url`` param overrides both)
=====================  ========================  ===========================================

Parse-time environment: ``RECSYS_JOBS_DIR`` (``<project>/jobs``), ``RECSYS_PYTHON`` (the
Python running Airflow), ``RECSYS_SPARK_SUBMIT`` (``spark-submit`` beside that Python, else
on PATH), ``RECSYS_SPARK_DRIVER_MEMORY`` (4g), ``RECSYS_SPARK_SHUFFLE_PARTITIONS`` (Spark's
default), ``RECSYS_TASK_RETRIES`` (2).
"""

from __future__ import annotations

import os
import shutil
import sys
from datetime import datetime, timedelta
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import Asset, Param, dag, task

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


def lookup(variable: str, env: str, default: str) -> str:
    """Jinja (without braces): the Airflow Variable, else the environment value, else ``default``."""
    fallback = os.environ.get(env, default).replace("\\", "\\\\").replace("'", "\\'")
    return f"var.value.get('{variable}', '{fallback}')"


RAW = "{{ " + lookup("recsys_raw_dir", "RECSYS_RAW_DIR", str(PROJECT / "data" / "raw")) + " }}"
WAREHOUSE = "{{ " + lookup("recsys_warehouse", "RECSYS_WAREHOUSE", str(PROJECT / "warehouse")) + " }}"
# Only the param or the Variable is rendered (and shown in the UI); the worker's own
# RECSYS_SQL_URL is picked by the shell, so a password in it never enters Airflow.
SQL_URL_OVERRIDE = "{{ params.sql_url or var.value.get('recsys_sql_url', '') }}"
DS = "{{ ds }}"

# Downstream DAGs schedule on this: one event per published ds.
RECOMMENDATIONS = Asset(name="movielens_recommendations")

DOC = """
### MovieLens recommendations (nightly)

Turns the MovieLens drop into the **top-N unseen films for every user** and publishes
them as `recommendations` (Parquet `recommendations/ds=…/` in the warehouse, and the SQL
table with its `recommendations_latest` view).

| task | does | on failure |
|---|---|---|
| `ingest` | validates the raw CSVs as of the run's date (`ds`) into `snapshot/ds=…`; bad rows go to `quarantine/ds=…` | missing file/column or too many rejects: fix the drop, clear the task |
| `build_features` | films and user vectors, `features/ds=…` | |
| `train` | film + user autoencoders (`gpu` pool / queue), `models/ds=…`, `embeddings/ds=…` | |
| `score` | top-N unseen films for every user into a staging partition | |
| `check` | quality gate: every user, no seen film, ranks, scores, model beats popularity | nothing is published; the report names each broken contract |
| `publish` | swaps the partition in and replaces that `ds` in SQL in one transaction; emits the Asset | the previous table stays as it was |
| `record_metrics` | counts, validation metrics, durations: `metrics/ds=…/run.json` | |

Every step is keyed on the logical date: a backfill of a past date uses only ratings up
to that date and rebuilds the partitions a nightly run would have built. Re-running a date
replaces its partitions (no duplicates). Params can be overridden when triggering.
"""


def spark_job(task_id: str, script: str, args: list[str], timeout: timedelta) -> SparkSubmitOperator:
    return SparkSubmitOperator(
        task_id=task_id,
        application=f"{JOBS}/{script}",
        application_args=args,
        conn_id="spark_default",
        spark_binary=SPARK_SUBMIT,
        driver_memory=DRIVER_MEMORY,
        conf=SPARK_CONF,
        name=f"recsys-{task_id}-{DS}",
        env_vars={"PYSPARK_PYTHON": PYTHON, "PYSPARK_DRIVER_PYTHON": PYTHON},
        execution_timeout=timeout,
    )


def python_job(
    task_id: str, script: str, args: list[str], timeout: timedelta, prefix: str = "", **kwargs
) -> BashOperator:
    """``python jobs/<script> <args>``; args may hold Jinja, so they are double-quoted, not escaped."""
    quoted = " ".join(f'"{a}"' for a in args)
    return BashOperator(
        task_id=task_id,
        bash_command=f'{prefix}"{PYTHON}" "{JOBS}/{script}" {quoted}',
        execution_timeout=timeout,
        append_env=True,
        **kwargs,
    )


@task(execution_timeout=timedelta(minutes=5))
def record_metrics(warehouse: str, run_ds: str) -> dict:
    """Row counts, users, validation metrics and durations of this run, kept per ds."""
    from recsys_core.run_metrics import record_run_metrics

    return record_run_metrics(warehouse, run_ds)


@dag(
    dag_id="movielens_recommendations",
    description="Nightly top-N unseen MovieLens films for every user",
    doc_md=DOC,
    schedule="30 2 * * *",  # 02:30 UTC every night
    start_date=datetime(1995, 1, 1),  # MovieLens starts in 1995: any date since can be backfilled
    catchup=False,
    max_active_runs=1,  # runs and backfills of the DAG never overlap: they share the warehouse
    tags=["recsys", "movielens", "spark", "torch"],
    default_args={
        "owner": "recsys",
        "retries": RETRIES,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timedelta(hours=1),
    },
    params={
        "top_n": Param(100, type="integer", minimum=1, maximum=1000, description="films per user"),
        "min_film_ratings": Param(1, type="integer", minimum=1, description="ratings a film needs to be scored"),
        "max_epochs": Param(50, type="integer", minimum=1, description="cap on user-AE epochs"),
        "max_minutes": Param(25, type="number", exclusiveMinimum=0, description="cap on the item-item fit + user-AE training time"),
        "seed": Param(42, type="integer", description="random seed of training"),
        "min_model_ratio": Param(1.1, type="number", minimum=0,
                                 description="gate: model NDCG@10 >= this x popularity's"),
        "keep": Param(30, type="integer", minimum=1, description="ds partitions kept in the table"),
        "sql_url": Param("", type="string",
                         description="SQL sink URL (empty: the recsys_sql_url Variable, else SQLite)"),
    },
)
def movielens_recommendations():
    ingest = spark_job("ingest", "ingest.py", ["--raw", RAW, "--warehouse", WAREHOUSE, "--ds", DS],
                       timedelta(hours=1))  # fmt: skip
    features = spark_job(
        "build_features", "features.py",
        ["--warehouse", WAREHOUSE, "--ds", DS, "--min-film-ratings", "{{ params.min_film_ratings }}"],
        timedelta(hours=1),
    )  # fmt: skip
    train = python_job(
        "train", "train.py",
        ["--warehouse", WAREHOUSE, "--ds", DS, "--epochs", "{{ params.max_epochs }}",
         "--max-minutes", "{{ params.max_minutes }}", "--seed", "{{ params.seed }}"],
        timedelta(hours=2), pool="gpu", queue="gpu",
    )  # fmt: skip
    score = python_job("score", "score.py", ["--warehouse", WAREHOUSE, "--ds", DS, "--top-n", "{{ params.top_n }}"],
                       timedelta(hours=1), pool="gpu", queue="gpu")  # fmt: skip
    check = python_job(
        "check", "check.py", ["--warehouse", WAREHOUSE, "--ds", DS, "--min-model-ratio", "{{ params.min_model_ratio }}"],
        timedelta(minutes=30),
    )  # fmt: skip
    # the URL travels in the environment, never on the logged command line
    publish = python_job(
        "publish", "publish.py", ["--warehouse", WAREHOUSE, "--ds", DS, "--keep", "{{ params.keep }}"],
        timedelta(hours=1), prefix='RECSYS_SQL_URL="${SQL_URL_OVERRIDE:-${RECSYS_SQL_URL:-}}" ',
        env={"SQL_URL_OVERRIDE": SQL_URL_OVERRIDE}, outlets=[RECOMMENDATIONS],
    )  # fmt: skip
    ingest >> features >> train >> score >> check >> publish >> record_metrics(WAREHOUSE, DS)


recommendations_dag = movielens_recommendations()
