"""SQLite backend of ``RecommendationSink`` (stdlib sqlite3), the default SQL copy.

Layout, one table per ``ds`` (as PostgreSQL keeps one partition per ``ds``):

- ``<table>_p<YYYYMMDD>_<hex>``: the rows of one ``ds``, WITHOUT ROWID with PRIMARY KEY
  (user_id, rank), so a user's list is one short key range and no other index is needed.
  ``ds`` is not stored in it, nor ``model_version`` when every row has the same one.
- ``<table>_partitions`` (ds, name, model_version, rows): the catalog of published ``ds``.
- ``<table>``: a view, the UNION ALL of every partition with its ``ds`` (and shared
  ``model_version``) as constants: the columns of ``contract.SQL_COLUMNS`` in order, so
  ``SELECT … FROM <table> WHERE ds = … AND user_id = …`` reads as it did from the former
  single table (SQLite pushes the WHERE into each arm: one key lookup per ``ds``).
  ``<table>_latest``: a view of the newest partition alone.

Publish is one transaction (``BEGIN IMMEDIATE``: publishers queue) in WAL mode, so readers
keep reading the last committed state while it runs and never wait for it:

1. Build where no reader looks: the new partition table is created and the batches are
   inserted by ``executemany`` (one prepared INSERT, values bound in C; rows arrive in key
   order from the scorers, so the B-tree grows at its right edge). No journal of old pages
   is written (nothing old is touched), and the connection runs ``synchronous=NORMAL``:
   commits do not wait for the disk, only checkpoints sync (a power cut may lose the last
   publish, never the file).
2. Swap: the catalog row of ``ds`` is replaced, both views are re-created over the new set
   of partitions and the replaced partition is dropped; the COMMIT makes all of it visible
   at once: readers see the old ``ds`` or the new one, never a mix or a gap.

A failure before the commit (a bad row, a hook raising, a full disk, a killed process)
leaves the database as it was: the transaction rolls back, and the WAL frames of a
transaction that never committed are ignored when the file is next opened.

A file of an earlier version (one table ``<table>`` holding every ``ds``, an index, a
view) is converted once, in one transaction, when the sink opens it.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from recsys_core.dates import parse_ds
from recsys_core.errors import ConfigError
from recsys_core.progress import Progress
from recsys_core.publish.contract import PRIMARY_KEY, SQL_COLUMNS, SQL_TYPES, expired
from recsys_core.publish.hooks import Hook, fire
from recsys_core.publish.prefetch import prefetched
from recsys_core.publish.sink import (
    LIST_DS_SQL,
    RecommendationSink,
    TableNames,
    partition_name,
    redact_url,
    table_definition,
)

log = logging.getLogger(__name__)

PREFIX = "sqlite:///"
CATALOG_SUFFIX = "_partitions"
ROWS_PER_INSERT = 100  # rows a statement of the load (x 6 values: far below SQLite's 32,766)
PAGE_CACHE_KIB = 256 * 1024  # page cache of the publishing connection (PRAGMA cache_size)
# SQLite refuses a compound SELECT of more than 500 parts (SQLITE_MAX_COMPOUND_SELECT): the
# view unions the partitions in groups of at most this many.
VIEW_GROUP = 200
# a partition's columns and key: those of the contract but ds
PART_COLUMNS = tuple(column for column in SQL_COLUMNS if column.name != "ds")
PART_KEY = tuple(name for name in PRIMARY_KEY if name != "ds")  # (user_id, rank)
# A model_version shared by every row is kept once, as a literal in the views, if it is plain text.
LITERAL = re.compile(r"^[A-Za-z0-9_.:+-]{1,200}$")


def sqlite_path(url: str) -> str:
    """``sqlite:///rel/file.db`` -> ``rel/file.db``; ``sqlite:////abs/file.db`` -> ``/abs/file.db``.

    Raises ConfigError for any other form (no path, a ``?query``).
    """
    path = url[len(PREFIX) :] if url.lower().startswith(PREFIX) else ""
    if not path or "?" in path:
        raise ConfigError(
            f"--sql-url for SQLite is sqlite:///relative/file.db or sqlite:////absolute/file.db, "
            f"got {redact_url(url)!r}"
        )
    return path


def _quote(name: str) -> str:
    return f'"{name}"'  # names are checked identifiers (sink.TableNames)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def union_sql(partitions: list[tuple[str, str, str | None]], group: int | None = None) -> str:
    """The SELECT of the ``<table>`` view over ``partitions`` ((ds, table name, shared model_version)).

    Each arm adds its ``ds`` (and shared ``model_version``) as constants; more than
    ``group`` (default ``VIEW_GROUP``) arms are nested in groups so that no compound
    SELECT exceeds SQLite's limit. No partition: an empty SELECT with the contract's columns.
    """
    group = group or VIEW_GROUP
    if not partitions:
        types = SQL_TYPES["sqlite"]
        casts = ", ".join(f"CAST(NULL AS {types[c.arrow_type]}) AS {c.name}" for c in SQL_COLUMNS)
        return f"SELECT {casts} WHERE 0"
    arms = []
    for ds, name, version in partitions:
        columns = [_literal(ds) + " AS ds"]
        for column in PART_COLUMNS:
            shared = column.name == "model_version" and version is not None
            columns.append(f"{_literal(version)} AS model_version" if shared else column.name)
        arms.append(f"SELECT {', '.join(columns)} FROM {_quote(name)}")
    if len(arms) <= group:
        return "\nUNION ALL ".join(arms)
    groups = [arms[i : i + group] for i in range(0, len(arms), group)]
    return "\nUNION ALL ".join("SELECT * FROM (" + "\nUNION ALL ".join(g) + ")" for g in groups)


class SqliteSink(RecommendationSink):
    """The table in a SQLite file (WAL mode): views over one table per ``ds``, made if missing.

    Raises ConfigError for a malformed ``url`` or when ``<table>`` names something else
    (an index, a trigger); ``sqlite3.Error`` when the file cannot be opened or written
    (another publisher holding the write lock is waited for, 60 s at most).
    """

    def __init__(self, url: str, names: TableNames) -> None:
        path = sqlite_path(url)
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.url = redact_url(url)
        self.names = names
        self.view, self.latest = _quote(names.table), _quote(names.latest)
        self.catalog = _quote(names.table + CATALOG_SUFFIX)
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=60.0)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
        # Debian's and others' SQLite are built with SECURE_DELETE: every page a DROP frees is
        # overwritten with zeros first (7.4 s against 0.9 s for one ds of 28.3M rows, and as
        # many pages more to write). Recommendations are no secret: freed pages are just reused.
        self.conn.execute("PRAGMA secure_delete=OFF")
        self._create()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE takes the write lock up front, so publishers queue instead of failing.

        Whatever fails, the COMMIT included (a full disk while the last pages are written),
        rolls back unless SQLite already has.
        """
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def _create(self) -> None:
        with self._transaction() as conn:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.catalog} (ds TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
                "model_version TEXT, rows INTEGER NOT NULL)"
            )
            kinds = dict(conn.execute(
                "SELECT name, type FROM sqlite_master WHERE name IN (?, ?)", (self.names.table, self.names.latest)
            ).fetchall())  # fmt: skip
            kind = kinds.get(self.names.table)
            if kind == "table":
                self._convert(conn)
            elif kind not in (None, "view"):
                raise ConfigError(
                    f"{self.names.table} in {self.url} is a {kind}, not the recommendations view: "
                    "choose another --table"
                )
            if kind != "view" or kinds.get(self.names.latest) != "view":
                self._write_views(conn)

    def _convert(self, conn: sqlite3.Connection) -> None:
        """Move every ``ds`` of a single table (an earlier version's layout) into its own partition."""
        found = [row[0] for row in conn.execute(LIST_DS_SQL.format(table=self.view))]
        columns = ", ".join(column.name for column in PART_COLUMNS)
        for ds in sorted(found):
            name = self._new_partition(conn, ds)
            rows = conn.execute(
                f"INSERT INTO {_quote(name)} ({columns}) SELECT {columns} FROM {self.view} WHERE ds = ? "
                f"ORDER BY {', '.join(PART_KEY)}",
                (ds,),
            ).rowcount
            conn.execute(f"INSERT INTO {self.catalog} VALUES (?, ?, NULL, ?)", (ds, name, rows))
        conn.execute(f"DROP VIEW IF EXISTS {self.latest}")
        conn.execute(f"DROP TABLE {self.view}")  # and its index
        log.warning("%s: converted the single table %s of an earlier version into one table per ds (%s)",
                    self.url, self.names.table, ", ".join(sorted(found)) or "no ds")  # fmt: skip

    def _new_partition(self, conn: sqlite3.Connection, ds: str) -> str:
        name = partition_name(self.names, parse_ds(ds))
        definition = table_definition("sqlite", PART_COLUMNS, PART_KEY)
        conn.execute(f"CREATE TABLE {_quote(name)} (\n{definition}\n) WITHOUT ROWID")
        return name

    def _partitions(self, conn: sqlite3.Connection) -> list[tuple[str, str, str | None, int]]:
        """(ds, table name, shared model_version or None, rows) of every published ``ds``, ascending."""
        query = f"SELECT ds, name, model_version, rows FROM {self.catalog} ORDER BY ds"
        return conn.execute(query).fetchall()

    def _write_views(self, conn: sqlite3.Connection) -> None:
        partitions = [(ds, name, version) for ds, name, version, _ in self._partitions(conn)]
        conn.execute(f"DROP VIEW IF EXISTS {self.latest}")
        conn.execute(f"DROP VIEW IF EXISTS {self.view}")
        conn.execute(f"CREATE VIEW {self.view} AS {union_sql(partitions)}")
        conn.execute(f"CREATE VIEW {self.latest} AS {union_sql(partitions[-1:])}")

    def publish(self, ds: str, batches: Iterable[pa.RecordBatch], hook: Hook | None = None) -> int:
        parse_ds(ds)
        what = f"SQL load of ds={ds} into {self.names.qualified} at {self.url}"
        progress = Progress(what, unit="rows", every_s=10.0, logger=log)
        with self._transaction() as conn:
            name = self._new_partition(conn, ds)
            load = _Load(name)
            for number, rows in enumerate(prefetched(load.plan(batch) for batch in batches), 1):
                rows.insert(conn, _quote(name))
                progress.add(rows.count)
                fire(hook, "during_sql_load", batches=number, rows=progress.count)
            load_s = progress.done()
            loaded = time.monotonic()
            old = {row[0]: row for row in self._partitions(conn)}.get(ds)
            conn.execute(f"INSERT OR REPLACE INTO {self.catalog} VALUES (?, ?, ?, ?)",
                         (ds, name, load.shared_version, progress.count))  # fmt: skip
            if old is not None:
                conn.execute(f"DROP TABLE {_quote(old[1])}")
            self._write_views(conn)
            fire(hook, "before_sql_commit", rows=progress.count, replaced=old[3] if old else 0)
            swapped = time.monotonic()
        committed = time.monotonic()
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # keep the -wal file from growing
        log.info("%s %s ds=%s: loaded %s rows: load %.1f s, swap %.1f s (%s), commit %.1f s, checkpoint %.1f s",
                 self.url, self.names.qualified, ds, f"{progress.count:,}", load_s, swapped - loaded,
                 "the old partition dropped" if old else "a new ds", committed - swapped,
                 time.monotonic() - committed)  # fmt: skip
        return progress.count

    def published_ds(self) -> list[str]:
        return [row[0] for row in self._partitions(self.conn)]

    def apply_retention(self, keep: int) -> list[str]:
        with self._transaction() as conn:
            partitions = {ds: name for ds, name, _, _ in self._partitions(conn)}
            doomed = expired(sorted(partitions), keep)
            for ds in doomed:
                conn.execute(f"DELETE FROM {self.catalog} WHERE ds = ?", (ds,))
                conn.execute(f"DROP TABLE {_quote(partitions[ds])}")
            if doomed:
                self._write_views(conn)
        if doomed:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            log.info("retention (keep %d): dropped %s from %s", keep, ", ".join(doomed), self.url)
        return doomed

    def close(self) -> None:
        self.conn.close()


@dataclass
class _Rows:
    """The INSERTs of one batch: (statement, parameter tuples) pairs, and the rows they hold."""

    count: int
    statements: list[tuple[str, list[tuple]]]
    backfill: str | None = None  # a shared version no longer shared: written into the rows so far

    def insert(self, conn: sqlite3.Connection, table: str) -> None:
        if self.backfill is not None:
            conn.execute(f"UPDATE {table} SET model_version = ?", (self.backfill,))
        for statement, parameters in self.statements:
            conn.executemany(statement, parameters)


class _Load:
    """Arrow batches -> the INSERTs of one partition table (``plan``, run on the prefetch
    thread: the batches' Python values are built while SQLite inserts the previous ones).

    Each INSERT carries ``ROWS_PER_INSERT`` rows (``VALUES (…), (…), …``): the stdlib driver
    spends most of its time per statement, not per value, so this loads ~2.4x faster than
    one row a statement (367 vs 878 ns a row on the dev machine; the rows' Python values
    cost ~115 ns more). While every row carries the first row's ``model_version`` (and it
    is plain text), the column is left NULL and the version kept for the views; the first
    row with another one (or none) fills it in for the rows loaded so far, and the rest
    are loaded with theirs.
    """

    def __init__(self, name: str) -> None:
        self.name = _quote(name)
        self.version: str | None = None
        self.shared = True  # until a row says otherwise

    @property
    def shared_version(self) -> str | None:
        return self.version if self.shared else None

    def plan(self, batch: pa.RecordBatch) -> _Rows:
        if not batch.num_rows:
            return _Rows(0, [])
        backfill = None
        if self.shared and not self._same_version(batch.column("model_version")):
            self.shared, backfill = False, self.version
        columns = [c.name for c in PART_COLUMNS if not (self.shared and c.name == "model_version")]
        width, n = len(columns), batch.num_rows
        # row-major: the values of row i at [i * width, (i + 1) * width)
        flat: list = [None] * (width * n)
        for j, name in enumerate(columns):
            flat[j::width] = _values(batch.column(name))
        full = n - n % ROWS_PER_INSERT
        statements = []
        for rows, values in ((ROWS_PER_INSERT, flat[: full * width]), (1, flat[full * width :])):
            if values:
                row = f"({', '.join('?' * width)})"
                insert = f"INSERT INTO {self.name} ({', '.join(columns)}) VALUES {', '.join([row] * rows)}"
                parameters = list(zip(*[iter(values)] * (width * rows), strict=True))
                statements.append((insert, parameters))
        return _Rows(n, statements, backfill)

    def _same_version(self, versions: pa.Array) -> bool:
        if self.version is None:
            first = versions[0].as_py()
            if first is None or not LITERAL.match(first):
                return False
            self.version = first
        return versions.null_count == 0 and pc.all(pc.equal(versions, self.version)).as_py()


def _values(column: pa.Array) -> list:
    """A column as Python values, at Arrow's speed where it can: numbers through numpy, a
    few distinct strings through their dictionary (one ``str`` object each, not one a row)."""
    numeric = pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
    if column.null_count == 0 and numeric:
        return column.to_numpy().tolist()
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        encoded = pc.dictionary_encode(column)
        words = encoded.dictionary.to_pylist()
        if len(words) <= 64:
            if encoded.null_count:
                return [None if i is None else words[i] for i in encoded.indices.to_pylist()]
            return list(map(words.__getitem__, encoded.indices.to_numpy().tolist()))
    return column.to_pylist()
