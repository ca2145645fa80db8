"""A throwaway Airflow home for tests: env first, then the metadata DB, connection and pool."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def configure_airflow(home: Path) -> Path:
    """Point Airflow at ``home`` (SQLite metadata DB) and the project's dags/; init the DB.

    Must run before ``airflow`` is first imported in the process: Airflow reads its
    configuration at import time.
    """
    if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME") != str(home):
        raise RuntimeError("airflow was imported before configure_airflow(): its config is already fixed")
    os.environ.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW_CONN_SPARK_DEFAULT": '{"conn_type": "spark", "host": "local[2]"}',
        "RECSYS_TASK_RETRIES": "0",  # a failing task fails the run at once (dag.test waits out retries)
        "RECSYS_SPARK_DRIVER_MEMORY": "2g",
        "RECSYS_SPARK_SHUFFLE_PARTITIONS": "4",  # tiny drops: 200 partitions are pure overhead
    })  # fmt: skip
    from airflow.models.pool import Pool
    from airflow.utils import db

    db.initdb()
    Pool.create_or_update_pool("gpu", slots=1, description="GPU trainer", include_deferred=False)
    Pool.create_or_update_pool("recsys_warehouse", slots=1, description="one writer per warehouse",
                               include_deferred=False)  # fmt: skip
    return home
