"""SQLite backend of ``RecommendationSink`` (stdlib sqlite3), the default SQL copy.

The file runs in WAL mode so readers keep reading the last committed state while a
publish holds its write transaction. ``ds`` is stored as ISO text, which sorts by date.
"""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import pyarrow as pa

from recsys_core.errors import ConfigError
from recsys_core.progress import Progress
from recsys_core.publish.contract import COLUMNS, SQL_COLUMNS, USER_INDEX, expired
from recsys_core.publish.hooks import Hook, fire
from recsys_core.publish.sink import (
    LIST_DS_SQL,
    RecommendationSink,
    TableNames,
    redact_url,
    table_definition,
)

log = logging.getLogger(__name__)

PREFIX = "sqlite:///"


def sqlite_path(url: str) -> str:
    """``sqlite:///rel/file.db`` -> ``rel/file.db``; ``sqlite:////abs/file.db`` -> ``/abs/file.db``.

    Raises ConfigError for any other form (no path, a ``?query``).
    """
    path = url[len(PREFIX):] if url.lower().startswith(PREFIX) else ""
    if not path or "?" in path:
        raise ConfigError(
            f"--sql-url for SQLite is sqlite:///relative/file.db or sqlite:////absolute/file.db, "
            f"got {redact_url(url)!r}"
        )
    return path


def _quote(name: str) -> str:
    return f'"{name}"'  # names are checked identifiers (sink.TableNames)


class SqliteSink(RecommendationSink):
    """The table in a SQLite file (WAL mode), made from ``contract.SQL_COLUMNS`` if missing.

    Raises ConfigError for a malformed ``url``; ``sqlite3.Error`` when the file cannot be
    opened or written (another publisher holding the write lock is waited for, 60 s at most).
    """

    def __init__(self, url: str, names: TableNames) -> None:
        path = sqlite_path(url)
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.url = redact_url(url)
        self.names = names
        self.table = _quote(names.table)
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=60.0)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self._create()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE takes the write lock up front, so publishers queue instead of failing."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def _create(self) -> None:
        with self._transaction() as conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (\n{table_definition('sqlite')}\n) WITHOUT ROWID")
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS {_quote(self.names.index)} ON {self.table} ({', '.join(USER_INDEX)})"
            )
            conn.execute(
                f"CREATE VIEW IF NOT EXISTS {_quote(self.names.latest)} AS SELECT * FROM {self.table} "
                f"WHERE ds = (SELECT max(ds) FROM {self.table})"
            )

    def publish(self, ds: str, batches: Iterable[pa.RecordBatch], hook: Hook | None = None) -> int:
        insert = (
            f"INSERT INTO {self.table} ({', '.join(column.name for column in SQL_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(SQL_COLUMNS))})"
        )
        what = f"SQL load of ds={ds} into {self.names.qualified} at {self.url}"
        progress = Progress(what, unit="rows", every_s=10.0, logger=log)
        with self._transaction() as conn:
            deleted = conn.execute(f"DELETE FROM {self.table} WHERE ds = ?", (ds,)).rowcount
            for number, batch in enumerate(batches, 1):
                conn.executemany(insert, _rows(ds, batch))
                progress.add(batch.num_rows)
                fire(hook, "during_sql_load", batches=number, rows=progress.count)
            fire(hook, "before_sql_commit", rows=progress.count, replaced=deleted)
        progress.done()
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # keep the -wal file from growing
        return progress.count

    def published_ds(self) -> list[str]:
        return sorted(row[0] for row in self.conn.execute(LIST_DS_SQL.format(table=self.table)))

    def apply_retention(self, keep: int) -> list[str]:
        with self._transaction() as conn:
            doomed = expired(self.published_ds(), keep)
            if doomed:
                conn.execute(f"DELETE FROM {self.table} WHERE ds <= ?", (doomed[-1],))
        if doomed:
            log.info("retention (keep %d): deleted %s from %s", keep, ", ".join(doomed), self.url)
        return doomed

    def close(self) -> None:
        self.conn.close()


def _rows(ds: str, batch: pa.RecordBatch) -> Iterator[tuple]:
    """One batch as row tuples in ``SQL_COLUMNS`` order (``ds`` first); only one batch is
    ever held as Python objects."""
    columns = [batch.column(name).to_pylist() for name in COLUMNS]
    return zip(itertools.repeat(ds), *columns, strict=False)
