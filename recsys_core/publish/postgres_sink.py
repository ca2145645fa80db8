"""PostgreSQL backend of ``RecommendationSink`` (psycopg 3, the ``postgres`` extra).

Layout: the table is ``PARTITION BY LIST (ds)``, one partition table per ``ds``. The
primary key (ds, user_id, rank) and the (user_id, ds) index are declared on the parent, so
every partition has both; the view ``<table>_latest`` reads the parent's newest ``ds``.

One publish is one transaction (a transaction-scoped advisory lock on the table name
queues publishers and retention) in two phases, then a clean-up:

1. Build, invisible to readers: a new standalone table ``<table>_p<YYYYMMDD>_<hex>``
   LIKE the parent, with ``CHECK (ds = 'YYYY-MM-DD')``, no index yet. The batches are
   COPYed into it (CSV made by Arrow, no per-row Python; ``ds`` and, while the rows share
   it, ``model_version`` as column defaults, not in the CSV; ``FREEZE``, as the table is new
   in this transaction, so readers never rewrite its pages to set hint bits), then its
   primary key and index are built in one sort each (far cheaper than maintaining them
   row by row) and it is analyzed. Readers keep reading the old partition meanwhile.
   The hook points ``during_sql_load`` (after each batch) and ``before_sql_commit`` (here,
   before the swap takes its locks) are in this phase.
2. Swap, milliseconds: DETACH the old partition of ``ds`` (if any), ATTACH the new one
   FOR VALUES IN ('YYYY-MM-DD'), commit. The CHECK constraint proves the partition
   bound, so ATTACH scans nothing, and the indexes built in step 1 match the parent's,
   so ATTACH adopts them instead of building new ones. DETACH locks the parent (ACCESS
   EXCLUSIVE) until the commit: readers wait those milliseconds and then see the new
   rows; they never see a mix or an empty ``ds``. A reader query that runs long would
   hold the swap up, and every new reader queued behind it, so the swap waits at most
   ``SWAP_LOCK_TIMEOUT`` for its locks and retries (``SWAP_ATTEMPTS`` in all).
3. The detached table is dropped after the commit, in its own statement: removing
   gigabytes of files takes a second or more, which inside the swap would be a second
   of readers locked out. The swap marks it with the table comment ``DETACHED_MARK``, so
   one left behind (the process died in between) is dropped by the next publish or
   retention of the table.

A failure anywhere before the commit (a bad row, a hook raising, a lost connection, a
killed process) rolls the transaction back: the half-built table disappears with it and
the published partitions are exactly as they were. Nothing is left to clean up.

Retention detaches whole partitions in one short transaction and drops them after it.
The published ``ds`` are read from the partition bounds in the catalog (the session runs
with ``DateStyle`` ISO so they parse): a detached table is no longer published.

Upgrading from a version that kept a plain (non-partitioned) table: the sink does not
convert it (that would rewrite every row of every ``ds`` inside one lock) and refuses to
start with a ConfigError saying what to do: drop the table (``DROP TABLE … CASCADE``
drops the view too), or rename the table and its index out of the way (the view left
over the renamed table is replaced when the new table is made); then re-publish the
``ds`` to serve, which the Parquet table holds.
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Callable, Iterable

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql

from recsys_core.dates import parse_ds
from recsys_core.errors import ConfigError
from recsys_core.progress import Progress
from recsys_core.publish.contract import COLUMNS, PRIMARY_KEY, USER_INDEX, expired
from recsys_core.publish.hooks import Hook, fire
from recsys_core.publish.sink import (
    RecommendationSink,
    TableNames,
    partition_name,
    redact_url,
    table_definition,
)

log = logging.getLogger(__name__)

CSV_OPTIONS = pacsv.WriteOptions(include_header=False)  # nulls as unquoted empty = NULL in COPY
PARTITION_KEY = "LIST (ds)"
# One ds per partition, as ATTACH writes it back with DateStyle ISO.
BOUND = re.compile(r"^FOR VALUES IN \('(\d{4}-\d{2}-\d{2})'\)$")
# maintenance_work_mem of the two index builds (SET LOCAL: this transaction only). A sort
# larger than this spills to temporary files: ~10% slower at 10M rows than with 1GB, never wrong.
INDEX_BUILD_MEMORY = "1GB"
SWAP_LOCK_TIMEOUT = "2s"
SWAP_ATTEMPTS = 30
SWAP_RETRY_SLEEP_S = 1.0
DETACHED_MARK = "recsys: detached from {table}, to drop"


class PostgresSink(RecommendationSink):
    """The table in a PostgreSQL database, partitioned by ``ds``, made if missing.

    Raises ConfigError when a relation of another shape holds the name (a plain table of an
    earlier version, another partitioning) or the index name is taken; ``psycopg.Error``
    when the server cannot be reached or refuses.
    """

    def __init__(self, url: str, names: TableNames) -> None:
        self.url = redact_url(url)
        self.names = names
        self.table = self._ident(names.table)
        self.latest = self._ident(names.latest)
        self.conn = psycopg.connect(url, autocommit=True)
        # COPY FREEZE needs no snapshot older than the table; bounds are parsed as ISO dates.
        self.conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
        self.conn.execute("SET datestyle = 'ISO, YMD'")
        self._create()

    def _ident(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.names.schema, name) if self.names.schema else sql.Identifier(name)

    def _lock(self, cur: psycopg.Cursor) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"recsys:{self.names.qualified}",))

    def _create(self) -> None:
        with self.conn.transaction(), self.conn.cursor() as cur:
            self._lock(cur)
            if self.names.schema:
                cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.names.schema)))
            cur.execute(
                "SELECT c.relkind, pg_get_partkeydef(c.oid) FROM pg_class AS c WHERE c.oid = to_regclass(%s)",
                (self.table.as_string(self.conn),),
            )
            found = cur.fetchone()
            if found is not None:
                self._check_existing(*found)
            else:
                cur.execute(sql.SQL("CREATE TABLE {table} (\n{definition}\n) PARTITION BY {key}").format(
                    table=self.table, definition=sql.SQL(table_definition("postgres")), key=sql.SQL(PARTITION_KEY)))
                try:
                    with self.conn.transaction():
                        cur.execute(sql.SQL("CREATE INDEX {} ON {} ({})").format(
                            sql.Identifier(self.names.index), self.table, _identifiers(USER_INDEX)))
                except psycopg.errors.DuplicateTable:
                    raise ConfigError(
                        f"the index name {self.names.index} is taken (by a table renamed out of the "
                        f"way?): rename or drop that index, then re-run ({self.url})"
                    ) from None
            # CREATE OR REPLACE would lock out the view's readers on every run: only when
            # missing, or when the table is new (a view left over a renamed table is stale).
            cur.execute("SELECT to_regclass(%s)", (self.latest.as_string(self.conn),))
            view_missing = cur.fetchone()[0] is None
            if found is None or view_missing:
                cur.execute(sql.SQL(
                    "CREATE OR REPLACE VIEW {latest} AS SELECT ds, {columns} FROM {table} "
                    "WHERE ds = (SELECT max(ds) FROM {table})"
                ).format(latest=self.latest, table=self.table, columns=_identifiers(COLUMNS)))

    def _check_existing(self, relkind: str, partition_key: str | None) -> None:
        if relkind == "p" and partition_key == PARTITION_KEY:
            return
        names = self.names
        if relkind == "r":
            raise ConfigError(
                f"{names.qualified} at {self.url} is a plain table from an earlier version of the "
                f"publisher; it must now be partitioned by ds. Drop it (DROP TABLE {names.qualified} "
                f"CASCADE also drops the view {names.latest}), or rename it and its index "
                f"{names.index} out of the way; then re-publish the ds to serve (the Parquet table "
                "holds them all)"
            )
        what = f"partitioned by {partition_key}" if relkind == "p" else f"a relation of kind {relkind!r}"
        raise ConfigError(
            f"{names.qualified} at {self.url} is {what}, not a table partitioned by {PARTITION_KEY}: "
            "choose another --table or --schema"
        )

    def _partitions(self, cur: psycopg.Cursor) -> dict[str, tuple[sql.Identifier, float]]:
        """The partitions holding one ds each: ds -> (name, estimated rows)."""
        cur.execute(
            "SELECT n.nspname, c.relname, pg_get_expr(c.relpartbound, c.oid), c.reltuples "
            "FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
            "JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE i.inhparent = to_regclass(%s)",
            (self.table.as_string(self.conn),),
        )
        found = {}
        for schema, name, bound, rows in cur.fetchall():
            match = BOUND.match(bound or "")
            if match:  # partitions made otherwise (several ds, DEFAULT) are not ours to manage
                found[match.group(1)] = (sql.Identifier(schema, name), rows)
        return found

    def publish(self, ds: str, batches: Iterable[pa.RecordBatch], hook: Hook | None = None) -> int:
        day = parse_ds(ds)
        value = sql.Literal(day)
        new = self._ident(partition_name(self.names, day))
        what = f"SQL load of ds={ds} into {self.names.qualified} at {self.url}"
        progress = Progress(what, unit="rows", every_s=10.0, logger=log)
        with self.conn.transaction(), self.conn.cursor() as cur:
            self._lock(cur)
            cur.execute(sql.SQL(
                "CREATE TABLE {new} (LIKE {table} INCLUDING CONSTRAINTS, CHECK (ds = {value}))"
            ).format(new=new, table=self.table, value=value))
            cur.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN ds SET DEFAULT {}").format(new, value))
            self._copy(cur, new, batches, progress, hook)
            copy_s = progress.done()
            copied = time.monotonic()
            for column in ("ds", "model_version"):
                drop = sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP DEFAULT")
                cur.execute(drop.format(new, sql.Identifier(column)))
            cur.execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(INDEX_BUILD_MEMORY)))
            # the same keys as the parent's, so that ATTACH adopts them instead of building its own
            cur.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(new, _identifiers(PRIMARY_KEY)))
            cur.execute(sql.SQL("CREATE INDEX ON {} ({})").format(new, _identifiers(USER_INDEX)))
            cur.execute(sql.SQL("ANALYZE {}").format(new))
            indexed = time.monotonic()
            old, old_rows = self._partitions(cur).get(ds, (None, 0.0))
            fire(hook, "before_sql_commit", rows=progress.count, replaced=max(int(old_rows), 0))
            swap_started = time.monotonic()

            def swap() -> None:
                if old is not None:
                    self._detach(cur, old)
                cur.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
                    self.table, new, value))

            self._under_lock(cur, f"swap ds={ds}", swap)
        swapped = time.monotonic()
        self._drop_detached()
        log.info("%s %s ds=%s: loaded %s rows: copy %.1f s, primary key and index %.1f s, swap and commit "
                 "%.3f s, old partition dropped in %.1f s", self.url, self.names.qualified, ds,
                 f"{progress.count:,}", copy_s, indexed - copied, swapped - swap_started,
                 time.monotonic() - swapped)  # fmt: skip
        return progress.count

    def _copy(self, cur: psycopg.Cursor, new: sql.Identifier, batches: Iterable[pa.RecordBatch],
              progress: Progress, hook: Hook | None) -> None:  # fmt: skip
        """COPY ``batches`` into the new partition, firing ``during_sql_load`` after each.

        While the rows carry the first row's ``model_version`` it is the column's default
        and left out of the CSV (a quarter less for the server to parse); from the first
        batch that differs, the rest goes in a second COPY with every column.
        """
        stream = iter(batches)
        batch, number, copied = next(stream, None), 0, []
        shared = None
        if batch is not None and batch.num_rows:
            shared = batch.column("model_version")[0].as_py()
        if shared is not None:
            cur.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN model_version SET DEFAULT {}").format(
                new, sql.Literal(shared)))  # fmt: skip
        while batch is not None:
            narrow = shared is not None and _all_equal(batch, shared)
            columns = [c for c in COLUMNS if not (narrow and c == "model_version")]
            statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, FREEZE)")
            with cur.copy(statement.format(new, _identifiers(columns))) as copy:
                while batch is not None and (not narrow or _all_equal(batch, shared)):
                    copy.write(_csv(batch, columns))
                    number += 1
                    progress.add(batch.num_rows)
                    fire(hook, "during_sql_load", batches=number, rows=progress.count)
                    batch = next(stream, None)
            copied.append(cur.rowcount)
            shared = shared if narrow else None
        if -1 not in copied and sum(copied) != progress.count:
            raise RuntimeError(f"copied {sum(copied)} rows, streamed {progress.count}")

    def _detach(self, cur: psycopg.Cursor, partition: sql.Identifier) -> None:
        """Detach ``partition`` and mark it for ``_drop_detached`` (after the commit)."""
        cur.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(self.table, partition))
        mark = DETACHED_MARK.format(table=self.names.qualified)
        cur.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(partition, sql.Literal(mark)))

    def _drop_detached(self) -> None:
        """Drop the tables ``_detach`` marked, each in its own transaction; best effort."""
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT n.nspname, c.relname FROM pg_class AS c "
                "JOIN pg_namespace AS n ON n.oid = c.relnamespace "
                "JOIN pg_description AS d ON d.objoid = c.oid AND d.classoid = 'pg_class'::regclass "
                "AND d.objsubid = 0 WHERE c.relkind = 'r' AND NOT c.relispartition AND d.description = %s",
                (DETACHED_MARK.format(table=self.names.qualified),),
            )
            for schema, name in cur.fetchall():
                try:
                    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(schema, name)))
                except psycopg.Error as exc:  # left for the next publish or retention
                    log.warning("%s: could not drop the detached table %s.%s: %s", self.url, schema, name, exc)

    def _under_lock(self, cur: psycopg.Cursor, what: str, statements: Callable[[], None]) -> None:
        """Run DDL that locks the parent, in a savepoint retried when readers hold it too long."""
        for attempt in range(1, SWAP_ATTEMPTS + 1):
            try:
                with self.conn.transaction():  # a savepoint: a lock timeout undoes this part only
                    cur.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(SWAP_LOCK_TIMEOUT)))
                    statements()
                return
            except psycopg.errors.LockNotAvailable:
                if attempt == SWAP_ATTEMPTS:
                    raise
                log.warning("%s %s: %s waited %s for readers' locks, retrying (%d/%d)", self.url,
                            self.names.qualified, what, SWAP_LOCK_TIMEOUT, attempt, SWAP_ATTEMPTS)  # fmt: skip
                time.sleep(SWAP_RETRY_SLEEP_S)

    def published_ds(self) -> list[str]:
        with self.conn.cursor() as cur:
            return sorted(self._partitions(cur))

    def apply_retention(self, keep: int) -> list[str]:
        with self.conn.transaction(), self.conn.cursor() as cur:
            self._lock(cur)
            partitions = self._partitions(cur)
            doomed = expired(sorted(partitions), keep)

            def detach() -> None:
                for ds in doomed:
                    self._detach(cur, partitions[ds][0])

            if doomed:
                self._under_lock(cur, "retention", detach)
        self._drop_detached()
        if doomed:
            log.info("retention (keep %d): dropped the partitions of %s from %s", keep, ", ".join(doomed), self.url)
        return doomed

    def close(self) -> None:
        self.conn.close()


def _identifiers(names: Iterable[str]) -> sql.Composable:
    """``names`` as a comma-separated list of quoted identifiers."""
    return sql.SQL(", ").join(sql.Identifier(name) for name in names)


def _csv(batch: pa.RecordBatch, columns: list[str]) -> bytes:
    """A batch as CSV rows of ``columns``; Arrow writes float32 in round-trip form."""
    buffer = io.BytesIO()
    pacsv.write_csv(batch.select(columns), buffer, CSV_OPTIONS)
    return buffer.getvalue()


def _all_equal(batch: pa.RecordBatch, version: str) -> bool:
    """Whether every row of ``batch`` has ``model_version`` ``version`` (no null)."""
    column = batch.column("model_version")
    return column.null_count == 0 and pc.all(pc.equal(column, version)).as_py() is not False
