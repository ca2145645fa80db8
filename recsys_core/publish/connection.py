"""The SQL sink's URL from an Airflow Connection's fields (no Airflow import here).

The DAG's publish task resolves the Connection (``recsys_sql`` by default) at run time,
turns it into a URL here and hands it to ``jobs/publish.py`` in the child's environment
(``RECSYS_SQL_URL``) only: the password never enters a template, a rendered field, the
command line or a log line.

- ``postgres`` / ``postgresql``: ``postgresql://login:password@host:port/<schema field>``
  (in an Airflow Postgres connection the *schema* field is the database); libpq options
  from the extra (``sslmode``, ``sslrootcert``, ``connect_timeout``, …) become query
  parameters.
- ``sqlite``: the *host* field is the database file: ``sqlite:///<host>``.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from recsys_core.errors import ConfigError

LIBPQ_EXTRAS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "connect_timeout", "application_name",
                "options", "target_session_attrs", "keepalives", "keepalives_idle")  # fmt: skip


def sql_url_from_connection(
    conn_id: str,
    conn_type: str | None,
    host: str | None = None,
    port: int | None = None,
    login: str | None = None,
    password: str | None = None,
    schema: str | None = None,
    extra: dict | None = None,
) -> str:
    """The sink URL of a connection; ConfigError naming the connection when it cannot be one."""
    kind = (conn_type or "").lower()
    if kind in ("postgres", "postgresql"):
        if not host:
            raise ConfigError(f"connection {conn_id!r} (postgres) has no host")
        if not schema:
            raise ConfigError(f"connection {conn_id!r} (postgres) names no database (its schema field)")
        user = quote(login or "", safe="")
        secret = f":{quote(password, safe='')}" if password else ""
        credentials = f"{user}{secret}@" if user or secret else ""
        where = f"{host}:{int(port)}" if port else host
        options = {k: str(v) for k, v in (extra or {}).items() if k in LIBPQ_EXTRAS and v is not None}
        query = f"?{urlencode(options)}" if options else ""
        return f"postgresql://{credentials}{where}/{quote(schema, safe='')}{query}"
    if kind == "sqlite":
        if not host:
            raise ConfigError(f"connection {conn_id!r} (sqlite) names no database file (its host field)")
        return f"sqlite:///{host}"
    raise ConfigError(f"connection {conn_id!r} is of type {conn_type!r}: the SQL sink takes postgres or sqlite")
