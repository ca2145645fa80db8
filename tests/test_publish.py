"""Publishing the recommendations table with real backends: Parquet, SQLite and PostgreSQL.

PostgreSQL is a real server started for the session (``postgres_server`` in conftest):
skipped when its binaries are missing, a failure under CI. Faults are injected through
``run_publish``'s hook, never by mocking a backend.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import queue
import shutil
import sqlite3
import subprocess
import threading
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_core.errors import ConfigError, InputError
from recsys_core.paths import Warehouse
from recsys_core.publish import sink as sink_module
from recsys_core.publish import sqlite_sink
from recsys_core.publish.contract import CHECK_FILE
from recsys_core.publish.prefetch import prefetched
from recsys_core.publish.publish import run_publish
from recsys_core.publish.sql import open_sink, redact_url

from .conftest import ROOT, VENV_BIN
from .pg import PASSWORD

DS1, DS2, DS3, DS4 = "2018-09-27", "2018-09-28", "2018-09-29", "2018-09-30"
SELECT = "SELECT ds, user_id, rank, movie_id, score, source, model_version FROM {} ORDER BY ds, user_id, rank"


class Boom(Exception):
    pass


# ---------------------------------------------------------------- staged data


def make_recs(n_users: int = 40, n: int = 8, version: str = "v1", seed: int = 0) -> pa.Table:
    """A small table in the contract: every user has ranks 1..n, some from popularity."""
    rng = np.random.default_rng(seed)
    user_ids = np.repeat(np.arange(1, n_users + 1, dtype=np.int32) * 7, n)
    size = n_users * n
    return pa.table({
        "user_id": user_ids,
        "rank": np.tile(np.arange(1, n + 1, dtype=np.int16), n_users),
        "movie_id": rng.integers(1, 200_000, size).astype(np.int32),
        "score": (rng.standard_normal(size) * 3).astype(np.float32),
        "source": np.where(user_ids % 5 == 0, "popularity", "model"),
        "model_version": [version] * size,
    })  # fmt: skip


def fake_weights(label: str) -> bytes:
    return f"user-AE weights of model {label}".encode()


def real_version(ds: str, label: str) -> str:
    """The ``model_version`` of the fake model ``stage`` writes for rows labelled ``label``."""
    return f"{ds}-{hashlib.sha256(fake_weights(label)).hexdigest()[:12]}"


def with_real_versions(ds: str, table: pa.Table) -> pa.Table:
    if "model_version" not in table.column_names:
        return table
    real = [real_version(ds, v) for v in table.column("model_version").to_pylist()]
    return table.set_column(table.column_names.index("model_version"), "model_version", pa.array(real, pa.string()))


def stage(wh: Path, ds: str, table: pa.Table, files: int = 3, checked: bool = True) -> Path:
    """Write ``table`` as the scoring job would (several parquet files plus files to skip),
    with the quality gate's pass mark unless ``checked`` is false. The model the rows name
    (``model_version`` labels become real versions) is written to ``models/ds=…``."""
    path = Path(Warehouse(str(wh)).recommendations_staging(ds))
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    label = table.column("model_version")[0].as_py() if "model_version" in table.column_names else "v1"
    models = wh / "models" / f"ds={ds}"
    models.mkdir(parents=True, exist_ok=True)
    (models / "film_ae.pt").write_bytes(b"film weights")
    (models / "user_ae.pt").write_bytes(fake_weights(label))
    table = with_real_versions(ds, table)
    bounds = np.linspace(0, table.num_rows, files + 1).astype(int)
    for i in range(files):
        pq.write_table(table.slice(bounds[i], bounds[i + 1] - bounds[i]), path / f"part-{i:05d}.parquet")
    (path / "_tmp").write_text("not parquet")
    (path / ".part-00000.parquet.crc").write_bytes(b"\x00crc")
    if checked:
        (path / CHECK_FILE).write_text(json.dumps({"passed": True, "model_version": real_version(ds, label)}))
    return path


def expected(ds: str, table: pa.Table) -> list[tuple]:
    rows = [(ds, *row.values()) for row in with_real_versions(ds, table).to_pylist()]
    return sorted(rows, key=lambda r: (r[0], r[1], r[2]))


# ---------------------------------------------------------------- reading back


def parquet_rows(wh: Path) -> list[tuple]:
    """The whole Parquet table through pandas, ds from the hive partition directories."""
    table_dir = wh / "recommendations"
    if not table_dir.exists():
        return []
    frames = []
    for part in sorted(table_dir.glob("ds=*")):
        frame = pd.read_parquet(part)
        assert [str(t) for t in frame.dtypes] == ["int32", "int16", "int32", "float32", "object", "object"]
        frame.insert(0, "ds", part.name[3:])
        frames.append(frame)
    if not frames:
        return []
    rows = pd.concat(frames).itertuples(index=False, name=None)
    return sorted(((ds, int(u), int(r), int(m), float(s), src, v) for ds, u, r, m, s, src, v in rows),
                  key=lambda r: (r[0], r[1], r[2]))  # fmt: skip


def parquet_files(wh: Path) -> dict[str, bytes]:
    """Every file under the table directory, hidden ones included, with its bytes."""
    root = wh / "recommendations"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@dataclass
class Backend:
    name: str
    url: str

    def connect(self):
        if self.name == "sqlite":
            return sqlite3.connect(self.url[len("sqlite:///"):], isolation_level=None)
        return psycopg.connect(self.url, autocommit=True)

    def rows(self, relation: str = "recommendations") -> list[tuple]:
        conn = self.connect()
        try:
            result = conn.execute(SELECT.format(relation)).fetchall()
        finally:
            conn.close()
        # psycopg parses real (float4) from its shortest text form: back to float32 to compare
        return [(ds if isinstance(ds, str) else ds.isoformat(), u, r, m, float(np.float32(score)), src, v)
                for ds, u, r, m, score, src, v in result]  # fmt: skip

    def counts(self, conn) -> dict[str, tuple[int, tuple[str, ...]]]:
        """Rows and model versions per ds, as one reader connection sees them now."""
        query = ("SELECT ds, count(*), min(model_version), max(model_version) FROM recommendations "
                 "GROUP BY ds ORDER BY ds")  # fmt: skip
        return {str(ds): (n, tuple(sorted({lo, hi}))) for ds, n, lo, hi in conn.execute(query).fetchall()}


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", f"sqlite:///{tmp_path}/serving/recs.db")
    return Backend("postgres", request.getfixturevalue("postgres_server").new_database())


@pytest.fixture
def wh(tmp_path) -> Path:
    return tmp_path / "wh"


# ---------------------------------------------------------------- publishing


def test_publish_gives_exactly_the_staged_rows(wh, backend):
    recs = make_recs()
    stage(wh, DS1, recs, files=3)
    summary = run_publish(wh, DS1, sql_url=backend.url)
    want = expected(DS1, recs)
    assert summary["rows"] == len(want) == summary["sql"]["rows"]
    assert parquet_rows(wh) == want
    assert backend.rows() == want
    assert backend.rows("recommendations_latest") == want
    assert [p.name for p in (wh / "recommendations" / f"ds={DS1}").iterdir()] == ["part-00000.parquet"]
    json.dumps(summary)


def test_one_staged_file_in_the_contract_is_published_as_is_others_are_rewritten(wh, tmp_path):
    """The local scorer's one zstd file in the contract's schema becomes the partition's file
    byte for byte (checked, not re-encoded); other types are conformed and rewritten."""
    url = f"sqlite:///{tmp_path}/recs.db"
    recs = make_recs(n_users=30)
    staged = stage(wh, DS1, recs, files=1)
    run_publish(wh, DS1, sql_url=url)
    published = wh / "recommendations" / f"ds={DS1}" / "part-00000.parquet"
    assert published.read_bytes() == (staged / "part-00000.parquet").read_bytes()
    assert parquet_rows(wh) == expected(DS1, recs) == Backend("sqlite", url).rows()
    wide = recs.set_column(0, "user_id", recs.column("user_id").cast(pa.int64()))
    staged = stage(wh, DS1, wide, files=1)
    run_publish(wh, DS1, sql_url=url)
    assert published.read_bytes() != (staged / "part-00000.parquet").read_bytes()
    assert pq.read_schema(published).field("user_id").type == pa.int32()
    assert parquet_rows(wh) == expected(DS1, recs) == Backend("sqlite", url).rows()


def test_republish_replaces_the_ds_and_latest_shows_the_newest(wh, backend):
    first, second = make_recs(version="v1", seed=1), make_recs(n_users=30, version="v2", seed=2)
    stage(wh, DS1, first)
    run_publish(wh, DS1, sql_url=backend.url)
    stage(wh, DS2, second)
    run_publish(wh, DS2, sql_url=backend.url)
    both = sorted(expected(DS1, first) + expected(DS2, second))
    assert parquet_rows(wh) == both and backend.rows() == both
    assert backend.rows("recommendations_latest") == expected(DS2, second)

    run_publish(wh, DS1, sql_url=backend.url)  # same staged rows again: nothing changes
    assert parquet_rows(wh) == both and backend.rows() == both

    replacement = make_recs(n_users=25, version="v1b", seed=3)
    stage(wh, DS1, replacement)
    run_publish(wh, DS1, sql_url=backend.url)
    now = sorted(expected(DS1, replacement) + expected(DS2, second))
    assert parquet_rows(wh) == now and backend.rows() == now
    assert backend.rows("recommendations_latest") == expected(DS2, second)
    hive = pd.read_parquet(wh / "recommendations")
    assert sorted(hive["ds"].astype(str).unique()) == [DS1, DS2] and len(hive) == len(now)


def test_retention_keeps_the_newest_k(wh, backend):
    tables = {ds: make_recs(n_users=10, seed=i) for i, ds in enumerate((DS1, DS2, DS3, DS4))}
    for ds, table in tables.items():
        stage(wh, ds, table)
        summary = run_publish(wh, ds, sql_url=backend.url, keep=2)
    assert summary["retention"] == {"keep": 2, "parquet_deleted": [DS2], "sql_deleted": [DS2]}
    kept = sorted(expected(DS3, tables[DS3]) + expected(DS4, tables[DS4]))
    assert parquet_rows(wh) == kept and backend.rows() == kept
    assert sorted(p.name for p in (wh / "recommendations").iterdir()) == [f"ds={DS3}", f"ds={DS4}"]
    assert sorted(p.name for p in (wh / "_staging" / "recommendations").iterdir()) == [f"ds={DS3}", f"ds={DS4}"]

    stage(wh, DS1, tables[DS1])  # a backfill retention would delete at once is refused
    with pytest.raises(ConfigError, match="--keep 2"):
        run_publish(wh, DS1, sql_url=backend.url, keep=2)
    for bad in (0, -1):
        with pytest.raises(ConfigError, match="--keep"):
            run_publish(wh, DS4, sql_url=backend.url, keep=bad)
    assert parquet_rows(wh) == kept and backend.rows() == kept


# ---------------------------------------------------------------- failures


@pytest.mark.parametrize("files", [1, 3])  # the staged file copied, or the rows rewritten
@pytest.mark.parametrize("point", ["after_staging", "before_swap", "during_sql_load", "before_sql_commit"])
def test_a_failure_leaves_the_published_state_and_a_rerun_completes(wh, backend, point, files):
    old, new = make_recs(version="v1", seed=1), make_recs(n_users=35, version="v2", seed=2)
    stage(wh, DS1, old)
    run_publish(wh, DS1, sql_url=backend.url)
    files_before, sql_before = parquet_files(wh), backend.rows()
    seen = []

    def hook(at: str, info: dict) -> None:
        seen.append(at)
        if at == "before_swap":  # the old partition is readable until the swap
            assert parquet_rows(wh) == expected(DS1, old)
        if at == point and (at != "during_sql_load" or info["batches"] == 2):
            raise Boom(at)

    stage(wh, DS1, new, files=files)
    with pytest.raises(Boom):
        run_publish(wh, DS1, sql_url=backend.url, hook=hook, batch_rows=50)
    assert seen[-1] == point
    assert backend.rows() == sql_before  # the SQL transaction rolled back
    if point in ("after_staging", "before_swap"):
        assert parquet_files(wh) == files_before  # byte for byte, no staging leftovers
    else:  # documented: Parquet (the source of truth) is already new; SQL lags until the re-run
        assert parquet_rows(wh) == expected(DS1, new)
        assert sorted(parquet_files(wh)) == sorted(files_before)

    summary = run_publish(wh, DS1, sql_url=backend.url)
    assert summary["rows"] == new.num_rows
    assert parquet_rows(wh) == expected(DS1, new) == backend.rows()


def test_bad_staged_rows_are_refused_and_change_nothing(wh, backend):
    good = make_recs()
    stage(wh, DS1, good)
    run_publish(wh, DS1, sql_url=backend.url)
    files_before = parquet_files(wh)
    duplicate_rank = good.set_column(1, "rank", pa.array(np.ones(good.num_rows, np.int16)))
    bad_source = good.set_column(4, "source", pa.array(["model"] * (good.num_rows - 1) + ["ALS"]))
    cases = [
        (duplicate_rank, "ranks are not 1..n"),
        (good.drop_columns(["movie_id"]), "missing column.*movie_id"),
        (bad_source, "column source must be one of"),
        (good.set_column(1, "rank", pa.array(np.full(good.num_rows, 40_000), pa.int32())), "column rank"),
    ]
    for table, message in cases:
        stage(wh, DS1, table)
        with pytest.raises(InputError, match=message):
            run_publish(wh, DS1, sql_url=backend.url)
        assert parquet_files(wh) == files_before
        assert backend.rows() == expected(DS1, good)


def test_a_ds_column_in_the_staged_files_is_checked_and_dropped(wh, tmp_path):
    url = f"sqlite:///{tmp_path}/recs.db"
    recs = make_recs(n_users=5)
    with_ds = recs.append_column("ds", pa.array([date(2018, 9, 27)] * recs.num_rows, pa.date32()))
    stage(wh, DS1, with_ds)
    run_publish(wh, DS1, sql_url=url)
    assert pq.read_schema(wh / "recommendations" / f"ds={DS1}" / "part-00000.parquet").names == [
        "user_id", "rank", "movie_id", "score", "source", "model_version"]  # fmt: skip
    assert parquet_rows(wh) == expected(DS1, recs)
    stage(wh, DS2, with_ds)
    with pytest.raises(InputError, match="column ds holds '2018-09-27', not only 2018-09-28"):
        run_publish(wh, DS2, sql_url=url)


def test_warehouse_paths():
    wh = Warehouse("/w")
    assert wh.recommendations(DS1) == f"/w/recommendations/ds={DS1}"
    assert wh.recommendations_staging(DS1) == f"/w/_staging/recommendations/ds={DS1}"
    with pytest.raises(ConfigError, match="--ds"):
        wh.recommendations_staging("2018-02-30")


def test_missing_staging_partition_names_its_path(wh, tmp_path):
    url = f"sqlite:///{tmp_path}/recs.db"
    with pytest.raises(InputError) as raised:
        run_publish(wh, DS1, sql_url=url)
    assert str(wh / "_staging" / "recommendations" / f"ds={DS1}") in str(raised.value)
    assert not (wh / "recommendations").exists() and not (tmp_path / "recs.db").exists()


def test_a_partition_the_gate_has_not_passed_is_not_published(wh, tmp_path):
    url = f"sqlite:///{tmp_path}/recs.db"
    path = stage(wh, DS1, make_recs(n_users=5, version="v1", seed=1), checked=False)
    with pytest.raises(InputError, match="has not passed the quality gate .* run the check job"):
        run_publish(wh, DS1, sql_url=url)
    (path / CHECK_FILE).write_text('{"passed": false}')
    with pytest.raises(InputError, match="quality gate"):
        run_publish(wh, DS1, sql_url=url)
    assert not (wh / "recommendations").exists() and not (tmp_path / "recs.db").exists()


# ---------------------------------------------------------------- readers during a publish


def test_a_reader_sees_the_old_rows_or_the_new_never_a_mix(wh, backend):
    old, new = make_recs(n_users=40, version="v1", seed=1), make_recs(n_users=30, version="v2", seed=2)
    stage(wh, DS1, old)
    run_publish(wh, DS1, sql_url=backend.url)
    stage(wh, DS1, new)
    paused: queue.Queue[str] = queue.Queue()
    resume: queue.Queue[None] = queue.Queue()
    errors: list[BaseException] = []

    def hook(at: str, info: dict) -> None:  # the publisher stops here until the reader has looked
        if at in ("during_sql_load", "before_sql_commit"):
            paused.put(at)
            resume.get(timeout=30)

    def publish() -> None:
        try:
            run_publish(wh, DS1, sql_url=backend.url, hook=hook, batch_rows=100)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    def next_pause() -> str:
        while True:
            try:
                return paused.get(timeout=0.1)
            except queue.Empty:
                assert worker.is_alive(), errors

    reader = backend.connect()
    worker = threading.Thread(target=publish)
    worker.start()
    try:
        points = []
        while not points or points[-1] != "before_sql_commit":
            points.append(next_pause())  # mid-load, then with the replace done but not committed
            assert backend.counts(reader) == {DS1: (old.num_rows, (real_version(DS1, "v1"),))}
            resume.put(None)
        assert points == ["during_sql_load"] * 3 + ["before_sql_commit"]
        worker.join(60)
        assert not errors, errors
        assert backend.counts(reader) == {DS1: (new.num_rows, (real_version(DS1, "v2"),))}
    finally:
        for _ in range(10):
            resume.put(None)
        worker.join(60)
        reader.close()
    assert backend.rows("recommendations_latest") == expected(DS1, new)


# ---------------------------------------------------------------- configuration and secrets


def test_invalid_names_and_urls_are_config_errors(wh, tmp_path):
    stage(wh, DS1, make_recs(n_users=5))
    url = f"sqlite:///{tmp_path}/recs.db"
    for table in ("recs; DROP TABLE users", "1recs", "", "r" * 64, "r" * 60):
        with pytest.raises(ConfigError, match="--table"):
            run_publish(wh, DS1, sql_url=url, table=table)
    with pytest.raises(ConfigError, match="--schema"):
        open_sink("postgresql://u@127.0.0.1:1/db", schema='x"y')
    with pytest.raises(ConfigError, match="--schema applies to postgresql only"):
        run_publish(wh, DS1, sql_url=url, schema="serving")
    for bad in ("mysql://app:hunter2@db/recs", "recs.db", "sqlite://relative.db"):
        with pytest.raises(ConfigError, match="--sql-url") as raised:
            run_publish(wh, DS1, sql_url=bad)
        assert "hunter2" not in str(raised.value)
    with pytest.raises(ConfigError, match="--ds"):
        run_publish(wh, "2018-02-30", sql_url=url)
    assert not (wh / "recommendations").exists() and not (tmp_path / "recs.db").exists()


def test_redact_url():
    assert redact_url("postgresql://app:hunter2@db:5432/recs") == "postgresql://app:***@db:5432/recs"
    assert redact_url("postgresql://app@db/recs?password=hunter2&sslmode=require") == (
        "postgresql://app@db/recs?password=***&sslmode=require")  # fmt: skip
    assert redact_url("postgresql://app:p%40ss:w@db/recs") == "postgresql://app:***@db/recs"
    assert redact_url("host=db password=hunter2 dbname=recs") == "host=db password=*** dbname=recs"
    assert redact_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_postgres_password_is_never_logged(wh, postgres_server, caplog):
    url = postgres_server.new_database()
    stage(wh, DS1, make_recs(n_users=5))
    with caplog.at_level(logging.DEBUG):
        summary = run_publish(wh, DS1, sql_url=url)
    assert PASSWORD not in caplog.text and PASSWORD not in json.dumps(summary)
    assert "postgres:***@127.0.0.1" in caplog.text and "loaded 40 rows" in caplog.text


def test_postgres_schema(wh, postgres_server):
    url = postgres_server.new_database()
    recs = make_recs(n_users=6)
    stage(wh, DS1, recs)
    summary = run_publish(wh, DS1, sql_url=url, schema="serving", table="top_n")
    assert summary["sql"]["table"] == "serving.top_n"
    backend = Backend("postgres", url)
    assert backend.rows("serving.top_n") == backend.rows("serving.top_n_latest") == expected(DS1, recs)
    with psycopg.connect(url) as conn:
        indexes = conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = 'serving'").fetchall()
    assert any("(user_id, ds)" in row[0] for row in indexes)


# ---------------------------------------------------------------- PostgreSQL partitions


def pg_partitions(url: str, table: str = "recommendations") -> dict[str, str]:
    """ds -> the name of its partition, from the catalog."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits AS i "
            "JOIN pg_class AS c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s)", (table,)
        ).fetchall()
    return {bound.split("'")[1]: name for name, bound in rows}


def pg_tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT relname FROM pg_class WHERE relkind IN ('r', 'p') "
                            "AND relnamespace = 'public'::regnamespace ORDER BY relname").fetchall()  # fmt: skip
    return [name for (name,) in rows]


def test_postgres_table_is_partitioned_by_ds_and_a_republish_swaps_the_partition(wh, postgres_server):
    url = postgres_server.new_database()
    backend = Backend("postgres", url)
    first, second = make_recs(version="v1", seed=1), make_recs(n_users=30, version="v2", seed=2)
    stage(wh, DS1, first)
    run_publish(wh, DS1, sql_url=url)
    stage(wh, DS2, second)
    run_publish(wh, DS2, sql_url=url)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT relkind, pg_get_partkeydef(oid) FROM pg_class "
                            "WHERE oid = 'recommendations'::regclass").fetchone() == ("p", "LIST (ds)")  # fmt: skip
        before = pg_partitions(url)
        assert sorted(before) == [DS1, DS2] and before[DS1].startswith("recommendations_p20180927_")
        for name in before.values():  # the indexes built before ATTACH were adopted, none built twice
            indexes = conn.execute(
                "SELECT count(*), count(h.inhparent) FROM pg_index AS x LEFT JOIN pg_inherits AS h "
                "ON h.inhrelid = x.indexrelid WHERE x.indrelid = %s::regclass", (name,)).fetchone()  # fmt: skip
            assert indexes == (2, 2)
    assert pg_tables(url) == sorted(["recommendations", *before.values()])

    replacement = make_recs(n_users=25, version="v1b", seed=3)
    stage(wh, DS1, replacement)

    def fail(at: str, info: dict) -> None:
        if at == "before_sql_commit":
            assert info["replaced"] == first.num_rows
            raise Boom(at)

    with pytest.raises(Boom):
        run_publish(wh, DS1, sql_url=url, hook=fail)
    assert pg_partitions(url) == before  # the half-built table went with the rollback
    assert pg_tables(url) == sorted(["recommendations", *before.values()])
    assert backend.rows() == sorted(expected(DS1, first) + expected(DS2, second))

    run_publish(wh, DS1, sql_url=url)
    after = pg_partitions(url)
    assert after[DS2] == before[DS2] and after[DS1] != before[DS1]
    assert pg_tables(url) == sorted(["recommendations", *after.values()])  # the old one dropped
    assert backend.rows() == sorted(expected(DS1, replacement) + expected(DS2, second))
    assert backend.rows("recommendations_latest") == expected(DS2, second)


def test_postgres_attach_scans_nothing_and_retention_drops_partitions(postgres_server):
    url = postgres_server.new_database()
    table = "t" * 51  # the longest name allowed: partition names are cut to fit in 63
    recs = make_recs(n_users=6)
    with open_sink(url, table=table) as sink:
        notices: list[str] = []
        sink.conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        sink.conn.execute("SET client_min_messages = debug1")
        for ds in (DS1, DS2, DS3):
            assert sink.publish(ds, iter(recs.to_batches(max_chunksize=100))) == recs.num_rows
        assert sum("is implied by existing constraints" in n for n in notices) == 3, notices
        assert sink.published_ds() == [DS1, DS2, DS3]
        assert sink.apply_retention(2) == [DS1]
        assert sink.published_ds() == [DS2, DS3]
        # a detached partition left behind (the process died before dropping it) goes next time
        sink.conn.execute("CREATE TABLE leftover (x int)")
        sink.conn.execute(f"COMMENT ON TABLE leftover IS 'recsys: detached from {table}, to drop'")
        assert sink.apply_retention(2) == []
    partitions = pg_partitions(url, table)
    assert sorted(partitions) == [DS2, DS3]
    assert all(len(name) <= 63 and name.startswith("t" * 44 + "_p201809") for name in partitions.values())
    assert pg_tables(url) == sorted([table, *partitions.values()])


def test_postgres_plain_table_of_an_earlier_version_is_refused_until_moved(wh, postgres_server):
    url = postgres_server.new_database()
    with psycopg.connect(url, autocommit=True) as conn:  # what the earlier version created
        conn.execute("CREATE TABLE recommendations (ds date NOT NULL, user_id integer NOT NULL, "
                     "rank smallint NOT NULL, movie_id integer NOT NULL, score real, source text NOT NULL, "
                     "model_version text, PRIMARY KEY (ds, user_id, rank))")  # fmt: skip
        conn.execute("CREATE INDEX recommendations_user_ds_idx ON recommendations (user_id, ds)")
        conn.execute("CREATE VIEW recommendations_latest AS SELECT * FROM recommendations "
                     "WHERE ds = (SELECT max(ds) FROM recommendations)")  # fmt: skip
        conn.execute("INSERT INTO recommendations VALUES ('2018-09-01', 1, 1, 5, 1.0, 'model', 'v0')")
    recs = make_recs(n_users=5)
    stage(wh, DS1, recs)
    with pytest.raises(ConfigError, match="plain table from an earlier version .* partitioned by ds"):
        run_publish(wh, DS1, sql_url=url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE recommendations RENAME TO recommendations_legacy")
    with pytest.raises(ConfigError, match="index name recommendations_user_ds_idx is taken"):
        run_publish(wh, DS1, sql_url=url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER INDEX recommendations_user_ds_idx RENAME TO recommendations_legacy_user_ds_idx")
    run_publish(wh, DS1, sql_url=url)  # the view left over the renamed table is replaced
    backend = Backend("postgres", url)
    assert backend.rows() == backend.rows("recommendations_latest") == expected(DS1, recs)
    assert len(backend.rows("recommendations_legacy")) == 1


def test_postgres_readers_polling_through_swaps_see_whole_ds_only(wh, postgres_server):
    url = postgres_server.new_database()
    versions = [make_recs(n_users=40 - 5 * i, version=f"v{i}", seed=i) for i in range(4)]
    allowed = {(t.num_rows, (real_version(DS1, f"v{i}"),)) for i, t in enumerate(versions)}
    stage(wh, DS1, versions[0])
    run_publish(wh, DS1, sql_url=url)
    backend, done, seen, errors = Backend("postgres", url), threading.Event(), [], []

    def read() -> None:
        try:
            with backend.connect() as reader:
                while not done.is_set():
                    seen.append(backend.counts(reader)[DS1])
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    worker = threading.Thread(target=read)
    worker.start()
    try:
        for table in versions[1:]:
            stage(wh, DS1, table)
            run_publish(wh, DS1, sql_url=url)
    finally:
        done.set()
        worker.join(60)
    assert not errors, errors
    assert seen and set(seen) <= allowed, set(seen) - allowed
    assert backend.rows() == expected(DS1, versions[-1])


# ---------------------------------------------------------------- SQLite: one table per ds


def sqlite_catalog(path: Path) -> tuple[list[tuple], list[str]]:
    """((ds, table, shared model_version, rows) of each published ds, every table in the file)."""
    conn = sqlite3.connect(path)
    try:
        catalog = conn.execute("SELECT ds, name, model_version, rows FROM recommendations_partitions "
                               "ORDER BY ds").fetchall()  # fmt: skip
        tables = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
    return catalog, tables


def test_sqlite_keeps_one_table_per_ds_and_drops_the_replaced_one(wh, tmp_path):
    url = f"sqlite:///{tmp_path}/recs.db"
    first, second = make_recs(version="v1", seed=1), make_recs(n_users=30, version="v2", seed=2)
    stage(wh, DS1, first)
    run_publish(wh, DS1, sql_url=url)
    stage(wh, DS2, second)
    run_publish(wh, DS2, sql_url=url)
    catalog, tables = sqlite_catalog(tmp_path / "recs.db")
    assert [(ds, version, rows) for ds, _, version, rows in catalog] == [
        (DS1, real_version(DS1, "v1"), first.num_rows), (DS2, real_version(DS2, "v2"), second.num_rows)]  # fmt: skip
    assert tables == sorted(["recommendations_partitions", *(name for _, name, _, _ in catalog)])
    stage(wh, DS1, second)
    run_publish(wh, DS1, sql_url=url)
    again, tables = sqlite_catalog(tmp_path / "recs.db")
    assert again[1] == catalog[1] and again[0][1] != catalog[0][1]  # a new table for DS1, the old one gone
    assert tables == sorted(["recommendations_partitions", again[0][1], again[1][1]])
    assert Backend("sqlite", url).rows() == sorted(expected(DS1, second) + expected(DS2, second))


def test_rows_of_several_model_versions_keep_their_own(backend, tmp_path):
    """A version every row shares is kept once (SQLite: in the views; PostgreSQL: as the
    column default during COPY); from the first batch that differs, rows keep their own."""
    recs = make_recs(n_users=10, n=4)
    versions = ["a"] * 20 + ["b"] * 10 + [None] * 10
    mixed = recs.set_column(5, "model_version", pa.array(versions, pa.string()))
    odd = recs.set_column(5, "model_version", pa.array(["it's"] * recs.num_rows))  # SQLite: not plain text
    first_null = recs.set_column(5, "model_version", pa.array([None] + ["v1"] * (recs.num_rows - 1)))
    tables = {DS1: mixed, DS2: odd, DS3: recs, DS4: first_null}
    with open_sink(backend.url) as sink:
        for ds, table in tables.items():
            assert sink.publish(ds, table.to_batches(max_chunksize=15)) == recs.num_rows
    want = [(ds, *row.values()) for ds, table in tables.items() for row in table.to_pylist()]
    assert backend.rows() == sorted(want, key=lambda r: (r[0], r[1], r[2]))
    if backend.name == "sqlite":
        catalog, _ = sqlite_catalog(tmp_path / "serving" / "recs.db")
        assert [version for _, _, version, _ in catalog] == [None, None, "v1", None]


def test_sqlite_view_nests_many_partitions(tmp_path, monkeypatch):
    """More partitions than one compound SELECT may hold (500 in SQLite) are unioned in groups."""
    monkeypatch.setattr(sqlite_sink, "VIEW_GROUP", 3)
    url = f"sqlite:///{tmp_path}/recs.db"
    days = [f"2018-10-{day:02d}" for day in range(1, 8)]
    with open_sink(url) as sink:
        for i, ds in enumerate(days):
            sink.publish(ds, make_recs(n_users=2, n=3, seed=i).to_batches())
        assert sink.published_ds() == days
        assert sink.apply_retention(5) == days[:2]
    conn = sqlite3.connect(tmp_path / "recs.db")
    try:
        view = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'recommendations'").fetchone()[0]
        counts = conn.execute("SELECT ds, count(*) FROM recommendations GROUP BY ds").fetchall()
        latest = conn.execute("SELECT DISTINCT ds FROM recommendations_latest").fetchall()
    finally:
        conn.close()
    assert view.count("SELECT * FROM (") == 2 and counts == [(ds, 6) for ds in days[2:]] and latest == [(days[-1],)]


def test_sqlite_file_of_the_single_table_layout_is_converted(wh, tmp_path):
    """A file an earlier version wrote (one table of every ds, its index and view) is moved
    into one table per ds, rows unchanged, the first time the sink opens it."""
    path = tmp_path / "recs.db"
    old = {DS1: make_recs(n_users=8, seed=1), DS2: make_recs(n_users=9, seed=2)}
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"CREATE TABLE recommendations (\n{sink_module.table_definition('sqlite')}\n) WITHOUT ROWID")
    conn.execute("CREATE INDEX recommendations_user_ds_idx ON recommendations (user_id, ds)")
    conn.execute("CREATE VIEW recommendations_latest AS SELECT * FROM recommendations "
                 "WHERE ds = (SELECT max(ds) FROM recommendations)")  # fmt: skip
    for ds, table in old.items():
        conn.executemany("INSERT INTO recommendations VALUES (?, ?, ?, ?, ?, ?, ?)",
                         [(ds, *row.values()) for row in table.to_pylist()])  # fmt: skip
    conn.close()
    want = sorted([(ds, *row.values()) for ds, table in old.items() for row in table.to_pylist()])
    with open_sink(f"sqlite:///{path}") as sink:
        assert sink.published_ds() == [DS1, DS2]
    backend = Backend("sqlite", f"sqlite:///{path}")
    assert backend.rows() == want and backend.rows("recommendations_latest") == [r for r in want if r[0] == DS2]
    catalog, tables = sqlite_catalog(path)
    assert [(ds, rows) for ds, _, _, rows in catalog] == [(DS1, 64), (DS2, 72)]
    assert "recommendations" not in tables and len(tables) == 3
    recs = make_recs(n_users=5, seed=3)
    stage(wh, DS3, recs)
    run_publish(wh, DS3, sql_url=f"sqlite:///{path}", keep=2)
    assert backend.rows() == sorted([r for r in want if r[0] == DS2] + expected(DS3, recs))


def test_sqlite_full_disk_leaves_the_published_rows(wh, tmp_path):
    """A disk that fills up mid-load (max_page_count: SQLite's own SQLITE_FULL) rolls back."""
    url = f"sqlite:///{tmp_path}/recs.db"
    old, new = make_recs(n_users=40, version="v1", seed=1), make_recs(n_users=400, n=50, version="v2", seed=2)
    stage(wh, DS1, old)
    run_publish(wh, DS1, sql_url=url)
    before = Backend("sqlite", url).rows()
    with open_sink(url) as sink:
        pages = sink.conn.execute("PRAGMA page_count").fetchone()[0]
        sink.conn.execute(f"PRAGMA max_page_count = {pages + 20}")
        with pytest.raises(sqlite3.OperationalError, match="full"):
            sink.publish(DS1, new.to_batches(max_chunksize=1000))
        assert sink.published_ds() == [DS1]
    assert Backend("sqlite", url).rows() == before
    catalog, tables = sqlite_catalog(tmp_path / "recs.db")
    assert tables == sorted(["recommendations_partitions", catalog[0][1]])


def test_prefetched_keeps_order_raises_at_the_item_and_stops_its_thread():
    assert list(prefetched(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield from range(3)
        raise Boom("the third batch is damaged")

    stream = prefetched(failing())
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(Boom, match="damaged"):
        next(stream)

    endless = prefetched(itertools.count())
    assert [next(endless) for _ in range(5)] == [0, 1, 2, 3, 4]
    endless.close()  # the consumer stops early (as when an INSERT fails): the helper thread ends
    assert not [t for t in threading.enumerate() if t.name == "prefetch"]


KILLED_PUBLISH = """
import os, signal, sys
import pyarrow.parquet as pq
from recsys_core.publish.sql import open_sink

def hook(point, info):
    if point == sys.argv[3] and info.get("batches", 100) == 100:
        os.kill(os.getpid(), signal.SIGKILL)

with open_sink(sys.argv[1]) as sink:
    sink.conn.execute("PRAGMA cache_size = 10")  # 10 pages: the load spills into the WAL before it commits
    sink.publish("2018-09-27", pq.read_table(sys.argv[2]).to_batches(max_chunksize=100), hook)
"""


@pytest.mark.parametrize("point", ["during_sql_load", "before_sql_commit"])
def test_sqlite_publisher_killed_mid_load_leaves_the_published_rows(wh, tmp_path, point):
    url = f"sqlite:///{tmp_path}/recs.db"
    old, new = make_recs(n_users=40, version="v1", seed=1), make_recs(n_users=600, n=20, version="v2", seed=2)
    stage(wh, DS1, old)
    run_publish(wh, DS1, sql_url=url)
    before, (catalog, tables) = Backend("sqlite", url).rows(), sqlite_catalog(tmp_path / "recs.db")
    pq.write_table(new, tmp_path / "new.parquet")
    killed = subprocess.run([str(VENV_BIN / "python"), "-c", KILLED_PUBLISH, url, str(tmp_path / "new.parquet"), point],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert killed.returncode == -9, killed.stderr
    assert (tmp_path / "recs.db-wal").stat().st_size > 0  # the killed transaction's pages, never committed
    assert Backend("sqlite", url).rows() == before
    assert sqlite_catalog(tmp_path / "recs.db") == (catalog, tables)
    stage(wh, DS1, new)
    run_publish(wh, DS1, sql_url=url)
    assert Backend("sqlite", url).rows() == expected(DS1, new)


# ---------------------------------------------------------------- the entry point


def run_job(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "RECSYS_SQL_URL"} | (env or {})
    cmd = [str(VENV_BIN / "python"), "jobs/publish.py", *args]
    return subprocess.run(cmd, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120, check=False)


def test_job_publishes_to_the_default_sqlite_and_reports_errors(wh, tmp_path):
    recs = make_recs(n_users=12)
    stage(wh, DS1, recs)
    result = run_job("--warehouse", str(wh), "--ds", DS1, "--keep", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["rows"] == recs.num_rows and summary["retention"]["keep"] == 3
    assert Backend("sqlite", f"sqlite:///{wh}/recommendations.db").rows() == expected(DS1, recs)

    other = tmp_path / "other.db"
    result = run_job("--warehouse", str(wh), "--ds", DS1, env={"RECSYS_SQL_URL": f"sqlite:///{other}"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert Backend("sqlite", f"sqlite:///{other}").rows() == expected(DS1, recs)

    result = run_job("--warehouse", str(wh), "--ds", DS2)
    assert result.returncode == 2
    missing = wh / "_staging" / "recommendations" / f"ds={DS2}"
    assert f"ERROR: no staging partition at {missing}" in result.stderr
    result = run_job("--warehouse", str(wh), "--ds", DS1, "--table", "bad-name")
    assert result.returncode == 2 and "ERROR: --table must be a SQL identifier" in result.stderr
