"""The SQL copy of the ``recommendations`` table: pick the backend for a URL and open it.

``open_sink(url)`` returns a ``RecommendationSink`` (the interface, in ``sink.py``) for
``sqlite:///path.db`` (stdlib sqlite3; ``sqlite:////abs/path.db`` for an absolute path) or
``postgresql://…`` (psycopg 3, the optional ``postgres`` extra, so imported only when
asked for). Both show readers the same shape: ``<table>`` with the columns of
``contract.SQL_COLUMNS``, one row per (ds, user_id, rank), a user's rows found by key, and
a view ``<table>_latest`` over the newest ``ds``; behind it, one table per ``ds``
(PostgreSQL: a table partitioned by ``ds``; SQLite: a view over a table per ``ds``).
``publish`` builds the new ``ds`` where readers do not look and swaps it in in one
transaction, so a reader sees the old rows of that ``ds`` or the new ones, never a mix,
and a failure leaves the old ones.

Imports point down: this factory -> ``sqlite_sink`` / ``postgres_sink`` -> ``sink`` -> ``contract``.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from recsys_core.errors import ConfigError
from recsys_core.paths import Warehouse
from recsys_core.publish.sink import RecommendationSink, TableNames, redact_url
from recsys_core.publish.sqlite_sink import SqliteSink

__all__ = ["default_sql_url", "open_sink", "redact_url", "sink_kind", "validate_target"]

log = logging.getLogger(__name__)

# URL scheme -> sink kind (the keys of contract.SQL_TYPES)
SINK_KINDS = {"sqlite": "sqlite", "postgresql": "postgres", "postgres": "postgres"}


def sink_kind(url: str) -> str:
    """``sqlite`` or ``postgres`` from the URL scheme; another scheme raises ConfigError."""
    scheme = url.split("://", 1)[0].lower() if isinstance(url, str) and "://" in url else ""
    if scheme not in SINK_KINDS:
        raise ConfigError(
            f"--sql-url must be sqlite:///PATH.db or postgresql://USER:PASSWORD@HOST:PORT/DB, "
            f"got {redact_url(str(url))!r}"
        )
    return SINK_KINDS[scheme]


def validate_target(url: str, table: str, schema: str | None) -> TableNames:
    """Check the URL scheme and the names without connecting to anything.

    Raises ConfigError for another scheme, a name that is not an identifier, or a
    ``schema`` given for SQLite.
    """
    kind = sink_kind(url)
    names = TableNames(table, schema)
    if kind == "sqlite" and schema is not None:
        raise ConfigError("--schema applies to postgresql only (a SQLite file has one schema)")
    return names


def default_sql_url(warehouse: Warehouse) -> str:
    """The SQLite file ``recommendations.db`` at the root of a local warehouse.

    Raises ConfigError when the warehouse is not a local directory (an ``s3://``, ``hdfs://`` … root).
    """
    root = warehouse.root
    if root.startswith("file://"):
        root = urlsplit(root).path
    elif "://" in root or root.startswith("file:"):
        raise ConfigError(
            f"--sql-url is required when --warehouse is not a local directory ({root}): "
            "the default SQLite file lives in the warehouse"
        )
    return f"sqlite:///{root}/recommendations.db"


def open_sink(url: str, table: str = "recommendations", schema: str | None = None) -> RecommendationSink:
    """Connect to the backend named by ``url``, creating the table, index and view if missing.

    Raises ConfigError for a bad URL or name (``validate_target``), or in PostgreSQL for a
    relation of another shape holding the name; the driver's own errors (``sqlite3.Error``,
    ``psycopg.Error``) when it cannot connect; ImportError for ``postgresql://`` without
    the ``postgres`` extra.
    """
    names = validate_target(url, table, schema)
    log.info("SQL target %s table %s", redact_url(url), names.qualified)
    if sink_kind(url) == "sqlite":
        return SqliteSink(url, names)
    from recsys_core.publish.postgres_sink import PostgresSink  # psycopg: the optional extra

    return PostgresSink(url, names)
