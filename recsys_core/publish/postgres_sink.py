"""PostgreSQL backend of ``RecommendationSink`` (psycopg 3, the ``postgres`` extra).

One publish is one transaction: COPY the batches (CSV made by Arrow, no per-row Python)
into a temporary table, delete the ``ds`` from the target, insert it from the temporary
table, commit. MVCC readers see the old rows until the commit and the new ones after it.
A transaction-scoped advisory lock on the table name queues concurrent publishers.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql

from recsys_core.dates import parse_ds
from recsys_core.publish.contract import COLUMNS, SOURCES, expired
from recsys_core.publish.hooks import Hook, fire
from recsys_core.publish.sql import (
    LIST_DS_SQL,
    Progress,
    RecommendationSink,
    TableNames,
    redact_url,
)

log = logging.getLogger(__name__)

LOAD_TABLE = "_recsys_recommendations_load"
CSV_OPTIONS = pacsv.WriteOptions(include_header=False)  # nulls as unquoted empty = NULL in COPY


class PostgresSink(RecommendationSink):
    def __init__(self, url: str, names: TableNames) -> None:
        self.url = redact_url(url)
        self.names = names
        parts = (names.schema, names.table) if names.schema else (names.table,)
        self.table = sql.Identifier(*parts)
        latest = (names.schema, names.latest) if names.schema else (names.latest,)
        self.latest = sql.Identifier(*latest)
        self.conn = psycopg.connect(url, autocommit=True)
        self._create()

    def _lock(self, cur: psycopg.Cursor) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"recsys:{self.names.qualified}",))

    def _create(self) -> None:
        sources = sql.SQL(", ").join(sql.Literal(s) for s in SOURCES)
        with self.conn.transaction(), self.conn.cursor() as cur:
            self._lock(cur)
            if self.names.schema:
                cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.names.schema)))
            cur.execute(sql.SQL("""
                CREATE TABLE IF NOT EXISTS {table} (
                    ds date NOT NULL,
                    user_id integer NOT NULL,
                    rank smallint NOT NULL CHECK (rank >= 1),
                    movie_id integer NOT NULL,
                    score real,
                    source text NOT NULL CHECK (source IN ({sources})),
                    model_version text,
                    PRIMARY KEY (ds, user_id, rank)
                )""").format(table=self.table, sources=sources))
            cur.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (user_id, ds)").format(
                sql.Identifier(self.names.index), self.table))
            # CREATE OR REPLACE would lock out the view's readers on every run: only when missing.
            cur.execute("SELECT to_regclass(%s)", (self.latest.as_string(self.conn),))
            if cur.fetchone()[0] is None:
                cur.execute(sql.SQL(
                    "CREATE VIEW {latest} AS SELECT ds, {columns} FROM {table} "
                    "WHERE ds = (SELECT max(ds) FROM {table})"
                ).format(latest=self.latest, table=self.table, columns=_columns()))

    def publish(self, ds: str, batches: Iterable[pa.RecordBatch], hook: Hook | None = None) -> int:
        day = parse_ds(ds)
        load = sql.Identifier(LOAD_TABLE)
        progress = Progress(f"{self.url} {self.names.qualified} ds={ds}")
        with self.conn.transaction(), self.conn.cursor() as cur:
            self._lock(cur)
            cur.execute(sql.SQL(
                "CREATE TEMPORARY TABLE {load} (user_id integer, rank smallint, movie_id integer, "
                "score real, source text, model_version text) ON COMMIT DROP"
            ).format(load=load))
            copy_sql = sql.SQL("COPY {load} ({columns}) FROM STDIN (FORMAT csv)")
            with cur.copy(copy_sql.format(load=load, columns=_columns())) as copy:
                for number, batch in enumerate(batches, 1):
                    copy.write(_csv(batch))
                    progress.add(batch.num_rows)
                    fire(hook, "during_sql_load", batches=number, rows=progress.rows)
            cur.execute(sql.SQL("DELETE FROM {} WHERE ds = %s").format(self.table), (day,))
            replaced = cur.rowcount
            cur.execute(sql.SQL(
                "INSERT INTO {table} (ds, {columns}) SELECT %s, {columns} FROM {load}"
            ).format(table=self.table, columns=_columns(), load=load), (day,))
            if cur.rowcount != progress.rows:
                raise RuntimeError(f"inserted {cur.rowcount} rows, streamed {progress.rows}")
            fire(hook, "before_sql_commit", rows=progress.rows, replaced=replaced)
        progress.done()
        return progress.rows

    def published_ds(self) -> list[str]:
        with self.conn.cursor() as cur:
            cur.execute(sql.SQL(LIST_DS_SQL).format(table=self.table))
            return sorted(row[0].isoformat() for row in cur.fetchall())

    def apply_retention(self, keep: int) -> list[str]:
        with self.conn.transaction(), self.conn.cursor() as cur:
            self._lock(cur)
            doomed = expired(self.published_ds(), keep)
            if doomed:
                cur.execute(sql.SQL("DELETE FROM {} WHERE ds <= %s").format(self.table),
                            (parse_ds(doomed[-1]),))
        if doomed:
            log.info("retention (keep %d): deleted %s from %s", keep, ", ".join(doomed), self.url)
        return doomed

    def close(self) -> None:
        self.conn.close()


def _columns() -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(name) for name in COLUMNS)


def _csv(batch: pa.RecordBatch) -> bytes:
    """A batch as CSV rows in ``COLUMNS`` order; Arrow writes float32 in round-trip form."""
    buffer = io.BytesIO()
    pacsv.write_csv(batch.select(list(COLUMNS)), buffer, CSV_OPTIONS)
    return buffer.getvalue()
