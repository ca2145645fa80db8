"""The publish step: staged recommendations -> Parquet table -> SQL table -> retention.

Order and what a failure leaves behind:

1. Checks that need no change: ``keep``, ``ds``, the SQL URL and names, the staging
   partition exists and the quality gate passed it for the model that is still in
   ``models/ds=…`` (its weights exist and hash to the ``model_version`` the gate vouched
   for), ``ds`` is not older than the ``keep`` newest published partitions (retention
   would delete it at once). Then the SQL backend is opened, so a wrong URL or an
   unreachable server fails before anything is published.
2. Parquet: leftovers of an interrupted publish are cleaned; the staging partition is
   conformed and checked (every row of that ``model_version``) into one file in a hidden
   sibling, which one rename swaps in (``parquet_table``). A failure or a kill up to the
   rename leaves the published partition untouched; after it, the partition is the new one.
3. SQL: the rows of ``ds`` are replaced from the *published* Parquet partition in one
   transaction. If this fails, every SQL row is exactly as before (rollback), while the
   Parquet partition of ``ds`` is already the new one: the Parquet table is the source
   of truth and the SQL table a serving copy of it that lags until the step is re-run.
   The step raises, so the scheduler retries; the re-run rewrites identical Parquet rows
   (the staging partition is kept) and completes the SQL copy. Re-runs are idempotent.
4. Retention, Parquet then SQL: all but the ``keep`` newest ``ds`` are deleted, with
   the staging partitions older than the oldest kept one.
"""

from __future__ import annotations

import logging
import os
import time

from recsys_core import defaults
from recsys_core.errors import ConfigError, InputError, reading
from recsys_core.fs_swap import exists, is_dir, read_json
from recsys_core.model_version import current_model_version, mismatch
from recsys_core.paths import Warehouse
from recsys_core.publish import parquet_read, parquet_table
from recsys_core.publish.contract import CHECK_FILE, SCHEMA, check_keep
from recsys_core.publish.hooks import Hook, fire
from recsys_core.publish.sql import default_sql_url, open_sink, redact_url, validate_target

log = logging.getLogger(__name__)


def _parent(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[0]


def check_not_expired(published: list[str], ds: str, keep: int) -> None:
    newer = [d for d in published if d > ds]
    if len(newer) >= keep:
        raise ConfigError(
            f"--ds {ds} is older than the --keep {keep} newest published partitions "
            f"({newer[-keep]} … {newer[-1]}): retention would delete it right away; "
            "raise --keep to publish it"
        )


def gate_passed(staging: str) -> bool:
    """Whether the quality gate left a passing ``_check.json`` in ``staging``."""
    path = f"{staging}/{CHECK_FILE}"
    if not exists(path):
        return False
    with reading(path, "quality-gate record", "re-run the check job"):
        return read_json(path).get("passed") is True


def checked_model_version(wh: Warehouse, ds: str, staging: str) -> str:
    """The model the gate passed ``staging`` for, which must still be the one in ``models/ds=…``."""
    path = f"{staging}/{CHECK_FILE}"
    with reading(path, "quality-gate record", f"re-run the check job for ds={ds}"):
        record = read_json(path)
    vouched = record.get("model_version")
    if not vouched:
        raise InputError(f"{path} names no model_version (written by an older gate): re-run the check job "
                         f"for ds={ds}")  # fmt: skip
    current = current_model_version(wh.models(ds), ds)
    if vouched != current:
        raise InputError(mismatch(ds, vouched, current, "the rows the gate passed"))
    return current


def run_publish(
    warehouse: Warehouse | str | os.PathLike[str],
    ds: str,
    sql_url: str | None = None,
    keep: int = defaults.KEEP,
    table: str = defaults.SQL_TABLE,
    schema: str | None = None,
    hook: Hook | None = None,
    batch_rows: int = 100_000,
) -> dict:
    """Publish ``_staging/recommendations/ds=…`` to Parquet and SQL; return a summary.

    ``sql_url`` defaults to the SQLite file ``recommendations.db`` in the warehouse.
    ``hook(point, info)`` runs at the points named in ``hooks.POINTS`` (tests inject
    faults there); ``batch_rows`` bounds the rows held in memory during the SQL load.
    """
    wh = warehouse if isinstance(warehouse, Warehouse) else Warehouse(os.fspath(warehouse))
    check_keep(keep)
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise ConfigError(f"batch_rows must be a positive whole number, got {batch_rows!r}")
    source, final = wh.recommendations_staging(ds), wh.recommendations(ds)
    table_dir, staging_dir = _parent(final), _parent(source)
    url = sql_url or default_sql_url(wh)
    validate_target(url, table, schema)
    if not is_dir(source):
        raise InputError(f"no staging partition at {source}: run the score job for ds={ds} first")
    if not gate_passed(source):
        raise InputError(f"the staging partition {source} has not passed the quality gate "
                         f"(no passing {CHECK_FILE}): run the check job for ds={ds} first")  # fmt: skip
    version = checked_model_version(wh, ds, source)
    check_not_expired(parquet_table.published_ds(table_dir), ds, keep)

    started = time.monotonic()
    with open_sink(url, table, schema) as sink:
        log.info("publishing ds=%s: %s -> %s and %s", ds, source, final, sink.url)
        parquet_table.clean_leftovers(table_dir)
        rows = parquet_table.publish_partition(source, final, ds, hook, model_version=version)
        fire(hook, "after_swap", path=final, rows=rows)
        parquet_done = time.monotonic()
        batches = parquet_read.read_batches(final, batch_rows, SCHEMA.names)
        sql_rows = sink.publish(ds, batches, hook)
        fire(hook, "after_sql", rows=sql_rows)
        sql_done = time.monotonic()
        deleted = parquet_table.apply_retention(table_dir, keep)
        oldest_kept = parquet_table.published_ds(table_dir)[0]
        stale = [d for d in parquet_table.published_ds(staging_dir) if d < oldest_kept]
        parquet_table.drop_partitions(staging_dir, stale)
        sql_deleted = sink.apply_retention(keep)
        sql_target = {"url": sink.url, "table": sink.names.qualified, "rows": sql_rows}
    summary = {
        "ds": ds,
        "rows": rows,
        "model_version": version,
        "parquet": final,
        "sql": sql_target,
        "retention": {"keep": keep, "parquet_deleted": deleted, "sql_deleted": sql_deleted},
        "seconds": round(time.monotonic() - started, 2),
        "parquet_seconds": round(parquet_done - started, 2),
        "sql_seconds": round(sql_done - parquet_done, 2),
    }
    log.info("published ds=%s: %s rows to %s and %s", ds, f"{rows:,}", final, redact_url(url))
    return summary
