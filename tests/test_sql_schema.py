"""The SQL table both sinks create is the one ``publish/contract.py`` describes.

The columns, their order, types, NOT NULL, checks and keys are read back from the
database (SQLite ``PRAGMA table_info``, PostgreSQL ``information_schema`` and catalog), so
a column added to ``contract.SCHEMA`` but not to a sink's DDL, or a type changed in one
sink only, fails here. The pinned types are the ones each sink has always declared.
"""

from __future__ import annotations

import ast
import sqlite3
from pathlib import Path

import psycopg
import pyarrow as pa
import pytest

from recsys_core.publish import contract, sink
from recsys_core.publish.sql import open_sink

from .conftest import ROOT

# (name, declared type, NOT NULL) in table order: ds, then contract.SCHEMA
PINNED = {
    "sqlite": [
        ("ds", "TEXT", True),
        ("user_id", "INTEGER", True),
        ("rank", "INTEGER", True),
        ("movie_id", "INTEGER", True),
        ("score", "REAL", False),
        ("source", "TEXT", True),
        ("model_version", "TEXT", False),
    ],
    "postgres": [
        ("ds", "date", True),
        ("user_id", "integer", True),
        ("rank", "smallint", True),
        ("movie_id", "integer", True),
        ("score", "real", False),
        ("source", "text", True),
        ("model_version", "text", False),
    ],
}
CONTRACT_COLUMNS = ["ds", *contract.SCHEMA.names]


def batch(**changes: object) -> pa.RecordBatch:
    row = {"user_id": 1, "rank": 1, "movie_id": 7, "score": 0.5, "source": "model", "model_version": "v1"}
    return pa.RecordBatch.from_pylist([row | changes], schema=contract.SCHEMA)


def test_sqlite_table_has_the_contract_columns(tmp_path):
    """A view ``recommendations`` with the contract's columns over one table per ds, whose
    columns (all but ds, a constant of the view) keep the pinned types and constraints."""
    path = tmp_path / "recs.db"
    with open_sink(f"sqlite:///{path}") as target:
        empty = sqlite3.connect(path)
        assert [row[1] for row in empty.execute("PRAGMA table_info(recommendations)")] == CONTRACT_COLUMNS
        empty.close()
        target.publish("2026-01-02", [batch()])
    conn = sqlite3.connect(path)
    try:
        kinds = dict(conn.execute("SELECT name, type FROM sqlite_master WHERE name LIKE 'recommendations%'"))
        [(ds, part)] = conn.execute("SELECT ds, name FROM recommendations_partitions").fetchall()
        view = conn.execute("PRAGMA table_info(recommendations)").fetchall()
        info = conn.execute(f"PRAGMA table_info({part})").fetchall()
        table_sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (part,)).fetchone()[0]
        [(ds_type,)] = conn.execute("SELECT DISTINCT typeof(ds) FROM recommendations").fetchall()
    finally:
        conn.close()
    assert kinds == {"recommendations": "view", "recommendations_latest": "view",
                     "recommendations_partitions": "table", part: "table"}  # fmt: skip
    assert ds == "2026-01-02" and part.startswith("recommendations_p20260102_") and ds_type == "text"
    assert [name for _, name, *_ in view] == CONTRACT_COLUMNS
    assert [(name, kind, bool(notnull)) for _, name, kind, notnull, _, _ in info] == PINNED["sqlite"][1:]
    primary_key = sorted((pk, name) for _, name, _, _, _, pk in info if pk)
    assert ("ds", *(name for _, name in primary_key)) == contract.PRIMARY_KEY == ("ds", "user_id", "rank")
    assert "CHECK (rank >= 1)" in table_sql and "CHECK (source IN ('model', 'popularity'))" in table_sql
    assert table_sql.rstrip().endswith("WITHOUT ROWID")


def test_sqlite_readers_find_a_user_by_key_in_every_ds(tmp_path):
    """Per-user lookups through either view are primary-key searches of each ds's table."""
    path = tmp_path / "recs.db"
    with open_sink(f"sqlite:///{path}") as target:
        for ds in ("2026-01-01", "2026-01-02", "2026-01-03"):
            target.publish(ds, [batch(), batch(user_id=2, rank=1), batch(user_id=2, rank=2, movie_id=8)])
    conn = sqlite3.connect(path)
    try:
        for query, args, rows in (
            ("SELECT rank, movie_id FROM recommendations WHERE user_id = ? ORDER BY ds, rank", (2,), 6),
            ("SELECT rank, movie_id FROM recommendations WHERE ds = ? AND user_id = ?", ("2026-01-02", 2), 2),
            ("SELECT rank, movie_id FROM recommendations_latest WHERE user_id = ? ORDER BY rank", (2,), 2),
        ):
            assert len(conn.execute(query, args).fetchall()) == rows
            plan = [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + query, args)]
            tables = [step for step in plan if "recommendations_p2026" in step]
            assert tables and all(step.startswith("SEARCH") and step.endswith("USING PRIMARY KEY (user_id=?)")
                                  for step in tables), plan  # fmt: skip
    finally:
        conn.close()


def test_postgres_table_has_the_contract_columns(postgres_server):
    url = postgres_server.new_database()
    with open_sink(url, schema="serving") as target:
        target.publish("2026-01-02", [batch()])  # a partition, built LIKE the parent and attached
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable = 'NO' FROM information_schema.columns "
            "WHERE table_schema = 'serving' AND table_name LIKE 'recommendations%%' "
            "ORDER BY table_name, ordinal_position"
        ).fetchall()
        constraints = conn.execute(
            "SELECT c.relispartition, con.contype, pg_get_constraintdef(con.oid) FROM pg_constraint AS con "
            "JOIN pg_class AS c ON c.oid = con.conrelid WHERE c.relnamespace = 'serving'::regnamespace "
            "AND con.conname NOT LIKE '%%ds_check' ORDER BY 1, 2, 3"
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'serving' ORDER BY indexdef"
        ).fetchall()
        partition_key = conn.execute("SELECT pg_get_partkeydef('serving.recommendations'::regclass)").fetchone()[0]
    by_table: dict[str, list[tuple[str, str, bool]]] = {}
    for table, name, kind, not_null in columns:
        by_table.setdefault("partition" if table.startswith("recommendations_p") else table, []).append(
            (name, kind, not_null)
        )
    assert sorted(by_table) == ["partition", "recommendations", "recommendations_latest"]
    assert [name for name, _, _ in by_table["recommendations"]] == CONTRACT_COLUMNS
    assert by_table["recommendations"] == by_table["partition"] == PINNED["postgres"]
    assert [(name, kind) for name, kind, _ in by_table["recommendations_latest"]] == [
        (name, kind) for name, kind, _ in PINNED["postgres"]
    ]
    checks = ["CHECK ((rank >= 1))", "CHECK ((source = ANY (ARRAY['model'::text, 'popularity'::text])))"]
    per_table = [("c", check) for check in checks] + [("p", "PRIMARY KEY (ds, user_id, rank)")]
    assert constraints == [(False, *row) for row in per_table] + [(True, *row) for row in per_table]
    assert partition_key == "LIST (ds)"
    assert len(indexes) == 4  # the parent's primary key and (user_id, ds) index, and the partition's
    assert all(index[0].endswith(("(ds, user_id, rank)", "(user_id, ds)")) for index in indexes)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@pytest.mark.parametrize(("column", "value"), [("rank", 0), ("source", "other"), ("user_id", None)])
def test_the_table_refuses_rows_the_contract_forbids(kind, column, value, tmp_path, request):
    """The CHECK and NOT NULL constraints hold in the database too, not only in ``conform``."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path}/recs.db"
        errors: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)
    else:
        url = request.getfixturevalue("postgres_server").new_database()
        errors = (psycopg.errors.CheckViolation, psycopg.errors.NotNullViolation)
    with open_sink(url) as target:
        with pytest.raises(errors):
            target.publish("2026-01-02", [batch(**{column: value})])
        assert target.published_ds() == []


def test_a_column_type_no_sink_knows_is_an_error(monkeypatch):
    monkeypatch.setattr(sink, "SQL_COLUMNS", (*contract.SQL_COLUMNS, contract.SqlColumn("x", pa.int64(), True)))
    for kind in contract.SQL_TYPES:
        with pytest.raises(ValueError, match=r"column x \(int64\) has no .* type"):
            sink.table_definition(kind)


def test_the_sinks_import_only_downwards():
    """The backends import the interface (``sink``), never the factory above them (``sql``)."""
    for module in ("sink", "sqlite_sink", "postgres_sink", "contract"):
        tree = ast.parse(Path(ROOT, "recsys_core", "publish", f"{module}.py").read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "recsys_core.publish.sql" not in imported, module
        assert "recsys_core.publish.publish" not in imported, module
