"""The SQL sink interface that the SQLite and PostgreSQL backends implement, and what they share.

Below both backends (``sqlite_sink``, ``postgres_sink``), which import only this module,
``contract`` and ``hooks``; the factory ``sql.open_sink`` sits above them and picks one.
Shared here: the checked table names (``TableNames``), URL redaction for logs, the
``CREATE TABLE`` body rendered from ``contract.SQL_COLUMNS`` in a backend's column types,
the name of a new per-``ds`` table, and the query listing the ``ds`` of a single table.
"""

from __future__ import annotations

import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa

from recsys_core.errors import ConfigError
from recsys_core.publish.contract import PRIMARY_KEY, SQL_COLUMNS, SQL_TYPES, SqlColumn
from recsys_core.publish.hooks import Hook

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
MAX_IDENTIFIER = 63  # characters; PostgreSQL truncates longer names silently
LATEST_SUFFIX = "_latest"
INDEX_SUFFIX = "_user_ds_idx"


def check_identifier(value: object, parameter: str) -> str:
    """``value`` if it is a SQL identifier we may create and query; otherwise raises ConfigError.

    ``parameter`` names the option the value came from, for the message.
    """
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise ConfigError(
            f"{parameter} must be a SQL identifier (letters, digits, _; not starting with a "
            f"digit; at most {MAX_IDENTIFIER} characters), got {value!r}"
        )
    return value


@dataclass(frozen=True)
class TableNames:
    """The validated names of the table, its per-user index and its ``_latest`` view.

    Raises ConfigError when ``table`` or ``schema`` is not an identifier, or when ``table``
    is too long for its index name to fit in ``MAX_IDENTIFIER`` characters.
    """

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
    """``url`` with the password masked (``user:***@host``, ``password=***``), for logs and errors.

    Never raises: a URL that does not parse comes back as ``<unparsable URL>``.
    """
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


def table_definition(
    kind: str, columns: Iterable[SqlColumn] | None = None, primary_key: Iterable[str] = PRIMARY_KEY
) -> str:
    """The body of ``CREATE TABLE … (<this>)`` from ``contract.SQL_COLUMNS``, for sink ``kind``.

    ``kind`` is a key of ``contract.SQL_TYPES`` (``sqlite``, ``postgres``): one line a column
    (name, type, NOT NULL, CHECK), then the primary key. ``columns`` and ``primary_key``
    narrow it (SQLite's per-``ds`` tables leave ``ds`` out). Column names are plain
    identifiers, written unquoted. Raises ValueError when a column's Arrow type has no type
    in ``kind``.
    """
    types = SQL_TYPES[kind]
    lines = []
    for column in SQL_COLUMNS if columns is None else columns:
        if column.arrow_type not in types:
            raise ValueError(
                f"column {column.name} ({column.arrow_type}) has no {kind} type: add one to contract.SQL_TYPES"
            )
        line = f"{column.name} {types[column.arrow_type]}"
        if column.not_null:
            line += " NOT NULL"
        if column.check is not None:
            line += f" CHECK ({column.check})"
        lines.append(line)
    lines.append(f"PRIMARY KEY ({', '.join(primary_key)})")
    return ",\n".join(lines)


def partition_name(names: TableNames, day: date) -> str:
    """A fresh name for the table of one ``ds``: ``<table>_p<YYYYMMDD>_<8 hex>``, the table's
    name cut so that the whole fits in ``MAX_IDENTIFIER`` characters."""
    suffix = f"_p{day:%Y%m%d}_{secrets.token_hex(4)}"
    return check_identifier(names.table[: MAX_IDENTIFIER - len(suffix)] + suffix, "partition name")


# Distinct ds newest first, one index probe each (a "loose index scan"): SELECT DISTINCT
# would read every row of the table, tens of millions per ds. Works in SQLite and PostgreSQL
# on a single table keyed by ds first (what SQLite converts from the layout of earlier versions).
LIST_DS_SQL = """
WITH RECURSIVE d(ds) AS (
    SELECT max(ds) FROM {table}
    UNION ALL
    SELECT (SELECT max(t.ds) FROM {table} AS t WHERE t.ds < d.ds) FROM d WHERE d.ds IS NOT NULL
)
SELECT ds FROM d WHERE ds IS NOT NULL
"""


class RecommendationSink(ABC):
    """A SQL table the recommendations of each ``ds`` are copied into (``sql.open_sink`` makes one).

    Readers query ``<table>`` (the columns of ``contract.SQL_COLUMNS``, one row per (ds,
    user_id, rank)) and the view ``<table>_latest`` over the newest ``ds``; a user's rows of
    a ``ds`` are found by key. Each backend keeps one table per ``ds`` behind them
    (PostgreSQL: partitions of ``<table>``; SQLite: tables under the view ``<table>``), so
    a publish builds the new ``ds`` where no reader looks and swaps it in at its commit.
    A context manager: leaving it closes the connection. Errors of the database driver
    (``sqlite3.Error``, ``psycopg.Error``) pass through unchanged.
    """

    url: str  # redacted: safe to log
    names: TableNames

    @abstractmethod
    def publish(self, ds: str, batches: Iterable[pa.RecordBatch], hook: Hook | None = None) -> int:
        """Replace the rows of ``ds`` by ``batches`` (``contract.SCHEMA``) in one transaction.

        Returns the number of rows written. Fires ``during_sql_load`` after each batch and
        ``before_sql_commit`` before the commit; whatever raises (a hook, a row breaking a
        constraint, a lost connection) rolls everything back and propagates.
        """

    @abstractmethod
    def published_ds(self) -> list[str]:
        """The ``ds`` present in the table, ascending (ISO dates)."""

    @abstractmethod
    def apply_retention(self, keep: int) -> list[str]:
        """Delete all but the ``keep`` newest ``ds`` in one transaction; return those deleted.

        Raises ConfigError when ``keep`` is not a whole number of at least 1.
        """

    @abstractmethod
    def close(self) -> None:
        """Close the connection; a transaction still open is rolled back."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
