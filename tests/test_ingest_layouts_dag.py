"""A 1M-layout drop (``.dat``, ``::``, Latin-1, no header) through the whole DAG (``dag.test()``).

The other layouts are held to the CSV layout's snapshot rows in test_ingest_layouts.py
(through ingest itself); this run checks that nothing after ingest assumes CSV files:
ingest is spark-submitted by the DAG with no layout or encoding argument.
"""

from __future__ import annotations

import csv
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from recsys_core.data.generator import generate
from recsys_core.data.layouts_writer import write_dat
from recsys_core.paths import Warehouse
from recsys_core.spark.ingest import run_ingest

from .airflow_env import configure_airflow
from .conftest import ROOT

DS = "2018-09-28"
DAG_ID = "movielens_recommendations"


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory) -> Path:
    """Airflow reads its configuration once per process: reuse the home another module set up."""
    if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME"):
        return Path(os.environ["AIRFLOW_HOME"])
    return configure_airflow(tmp_path_factory.mktemp("airflow"))


def snapshot(wh: Path, table: str) -> pd.DataFrame:
    df = pd.read_parquet(Path(Warehouse(str(wh)).snapshot(DS)) / table)
    return df.sort_values(list(df.columns)).reset_index(drop=True)


@pytest.mark.slow
def test_a_1m_layout_drop_runs_through_the_dag_with_the_csv_layouts_snapshot(airflow_home, spark, tmp_path):
    from airflow.dag_processing.dagbag import DagBag

    csv_drop = tmp_path / "csv"
    generate(csv_drop, scale=0.002, seed=21, genome_tags=16)
    movies = list(csv.DictReader((csv_drop / "movies.csv").open(encoding="utf-8", newline="")))
    movies[0]["title"] = "Misérables, Les (1995)"  # Latin-1 in movies.dat
    with (csv_drop / "movies.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, ["movieId", "title", "genres"], lineterminator="\n")
        w.writeheader()
        w.writerows(movies)
    dat = write_dat(csv_drop, tmp_path / "ml-1m", "1m")

    dag = DagBag(dag_folder=str(ROOT / "dags")).get_dag(DAG_ID)
    wh = tmp_path / "wh"
    os.environ["AIRFLOW_VAR_RECSYS_RAW_DIR"] = str(dat)
    os.environ["AIRFLOW_VAR_RECSYS_WAREHOUSE"] = str(wh)
    run = dag.test(logical_date=datetime.fromisoformat(DS).replace(tzinfo=UTC),
                   run_conf={"max_epochs": 3, "top_n": 10, "min_model_ratio": 0.0})  # fmt: skip
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states.pop("score_spark") == "skipped" and set(states.values()) == {"success"}, states

    reference = tmp_path / "wh-csv"
    run_ingest(spark, str(csv_drop), Warehouse(str(reference)), DS)
    for table in ("ratings", "movies"):
        pd.testing.assert_frame_equal(snapshot(wh, table), snapshot(reference, table))
    assert "Misérables, Les (1995)" in set(snapshot(wh, "movies").title)
    published = pd.read_parquet(wh / "recommendations" / f"ds={DS}")
    assert set(published.user_id) == set(snapshot(reference, "ratings").userId)
