"""Shared fixtures: one real local Spark session for the whole run, and drop writers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    from recsys_core.spark.session import quiet_spark_loggers

    session = (
        SparkSession.builder.master("local[2]")
        .appName("recsys-tests")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.ansi.enabled", "true")
        .config("spark.sql.parquet.compression.codec", "zstd")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "2g")
        # Spark's own start-up lines at WARN, as in the jobs (conf/log4j2.properties)
        .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{ROOT / 'conf' / 'log4j2.properties'}")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    quiet_spark_loggers(session)
    yield session
    session.stop()


def write_drop(directory: Path, files: dict[str, str], newline: str = "\n") -> Path:
    """Write hand-made CSVs (text with ``\\n`` line ends, re-ended with ``newline``)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        body = text.strip("\n") + "\n"
        (directory / name).write_bytes(body.replace("\n", newline).encode("utf-8"))
    return directory


@pytest.fixture
def drop_factory(tmp_path):
    counter = iter(range(1_000))

    def make(files: dict[str, str], newline: str = "\n") -> Path:
        return write_drop(tmp_path / f"drop{next(counter)}", files, newline)

    return make


@pytest.fixture(scope="module")
def spark_cluster(tmp_path_factory):
    """A real Spark standalone cluster (a master and one 1-core worker on 127.0.0.1), stopped after the module."""
    from .cluster import StandaloneCluster

    cluster = StandaloneCluster(tmp_path_factory.mktemp("spark-cluster"), cores=1, memory="1g")
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the session. Missing binaries skip, but fail under CI."""
    from .pg import PostgresServer, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None:
        message = "PostgreSQL server binaries (initdb, pg_ctl) not found: run scripts/ensure_postgres.sh"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    server = PostgresServer(bin_dir).start()
    yield server
    server.stop()
