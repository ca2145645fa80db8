"""The SQL copy of the ``recommendations`` table: one writer interface, two backends.

``open_sink(url)`` returns a ``RecommendationSink`` for ``sqlite:///path.db`` (stdlib
sqlite3; ``sqlite:////abs/path.db`` for an absolute path) or ``postgresql://…``
(psycopg 3). Both keep the same shape: the table with PRIMARY KEY (ds, user_id, rank),
an index on (user_id, ds) for per-user lookups, and a view ``<table>_latest`` over the
newest ``ds``. ``publish`` replaces one ``ds`` in one transaction, so a reader sees the
old rows of that ``ds`` or the new ones, never a mix, and a failure leaves the old ones.
"""

from __future__ import annotations

import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa

from recsys_core.errors import ConfigError
from recsys_core.paths import Warehouse
from recsys_core.publish.hooks import Hook

log = logging.getLogger(__name__)

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
MAX_IDENTIFIER = 63  # PostgreSQL truncates longer names silently
LATEST_SUFFIX = "_latest"
INDEX_SUFFIX = "_user_ds_idx"
SCHEMES = {"sqlite": "sqlite", "postgresql": "postgres", "postgres": "postgres"}


def check_identifier(value: object, parameter: str) -> str:
    """A table or schema name we create and query; anything else is a ConfigError."""
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise ConfigError(
            f"{parameter} must be a SQL identifier (letters, digits, _; not starting with a "
            f"digit; at most {MAX_IDENTIFIER} characters), got {value!r}"
        )
    return value


@dataclass(frozen=True)
class TableNames:
    """The validated names of the table, its per-user index and its ``_latest`` view."""

    table: str
    schema: str | None = None

    def __post_init__(self) -> None:
        check_identifier(self.table, "--table")
        if self.schema is not None:
            check_identifier(self.schema, "--schema")
        longest = MAX_IDENTIFIER - max(len(LATEST_SUFFIX), len(INDEX_SUFFIX))
        if len(self.table) > longest:
            raise ConfigError(
                f"--table must be at most {longest} characters so that {self.table}{INDEX_SUFFIX} "
                f"fits in {MAX_IDENTIFIER}, got {len(self.table)}"
            )

    @property
    def latest(self) -> str:
        return self.table + LATEST_SUFFIX

    @property
    def index(self) -> str:
        return self.table + INDEX_SUFFIX

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table


_PASSWORD_PARAM = re.compile(r"(?i)(\bpassword\s*=\s*)('[^']*'|[^\s&]*)")


def redact_url(url: str) -> str:
    """``url`` with the password masked (``user:***@host``, ``password=***``), for logs and errors."""
    masked = _PASSWORD_PARAM.sub(r"\1***", url)
    if "://" not in masked:
        return masked
    try:
        parts = urlsplit(masked)
    except ValueError:
        return "<unparsable URL>"
    userinfo, at, host = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
        masked = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return masked


def sink_kind(url: str) -> str:
    """``sqlite`` or ``postgres`` from the URL scheme; another scheme is a ConfigError."""
    scheme = url.split("://", 1)[0].lower() if isinstance(url, str) and "://" in url else ""
    if scheme not in SCHEMES:
        raise ConfigError(
            f"--sql-url must be sqlite:///PATH.db or postgresql://USER:PASSWORD@HOST:PORT/DB, "
            f"got {redact_url(str(url))!r}"
        )
    return SCHEMES[scheme]


def validate_target(url: str, table: str, schema: str | None) -> TableNames:
    """Check the URL scheme and the names without connecting to anything."""
    kind = sink_kind(url)
    names = TableNames(table, schema)
    if kind == "sqlite" and schema is not None:
        raise ConfigError("--schema applies to postgresql only (a SQLite file has one schema)")
    return names


def default_sql_url(warehouse: Warehouse) -> str:
    """The SQLite file ``recommendations.db`` at the root of a local warehouse."""
    root = warehouse.root
    if root.startswith("file://"):
        root = urlsplit(root).path
    elif "://" in root or root.startswith("file:"):
        raise ConfigError(
            f"--sql-url is required when --warehouse is not a local directory ({root}): "
            "the default SQLite file lives in the warehouse"
        )
    return f"sqlite:///{root}/recommendations.db"


class Progress:
    """Logs rows written and rows/s at most every ``every_s`` seconds, and once at the end."""

    def __init__(self, what: str, every_s: float = 10.0) -> None:
        self.what = what
        self.every_s = every_s
        self.rows = 0
        self.started = self.logged = time.monotonic()

    def add(self, rows: int) -> None:
        self.rows += rows
        now = time.monotonic()
        if now - self.logged >= self.every_s:
            self.logged = now
            self._log("loading", now)

    def done(self) -> float:
        now = time.monotonic()
        self._log("loaded", now)
        return now - self.started

    def _log(self, verb: str, now: float) -> None:
        elapsed = max(now - self.started, 1e-9)
        log.info("%s: %s %s rows (%s rows/s)", self.what, verb, f"{self.rows:,}", f"{self.rows / elapsed:,.0f}")


# Distinct ds newest first, one index probe each (a "loose index scan"): SELECT DISTINCT
# would read every row of the table, tens of millions per ds. Works in SQLite and PostgreSQL.
LIST_DS_SQL = """
WITH RECURSIVE d(ds) AS (
    SELECT max(ds) FROM {table}
    UNION ALL
    SELECT (SELECT max(t.ds) FROM {table} AS t WHERE t.ds < d.ds) FROM d WHERE d.ds IS NOT NULL
)
SELECT ds FROM d WHERE ds IS NOT NULL
"""


class RecommendationSink(ABC):
    """A SQL table the recommendations of each ``ds`` are copied into."""

    url: str  # redacted: safe to log
    names: TableNames

    @abstractmethod
    def publish(self, ds: str, batches: Iterable[pa.RecordBatch], hook: Hook | None = None) -> int:
        """Replace the rows of ``ds`` by ``batches`` (``contract.SCHEMA``) in one transaction.

        Returns the number of rows written. Fires ``during_sql_load`` after each batch and
        ``before_sql_commit`` before the commit; whatever raises rolls everything back.
        """

    @abstractmethod
    def published_ds(self) -> list[str]:
        """The ``ds`` present in the table, ascending."""

    @abstractmethod
    def apply_retention(self, keep: int) -> list[str]:
        """Delete all but the ``keep`` newest ``ds`` in one transaction; return those deleted."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_sink(url: str, table: str = "recommendations", schema: str | None = None) -> RecommendationSink:
    """Connect to the backend named by ``url``, creating the table, index and view if missing."""
    names = validate_target(url, table, schema)
    log.info("SQL target %s table %s", redact_url(url), names.qualified)
    if sink_kind(url) == "sqlite":
        from recsys_core.publish.sqlite_sink import SqliteSink

        return SqliteSink(url, names)
    from recsys_core.publish.postgres_sink import PostgresSink

    return PostgresSink(url, names)
