"""The Parquet side of publish: ``recommendations/ds=…/`` swapped in whole, and retention.

The scoring job's staging partition is read, conformed to the contract, checked and
written as one zstd file into a hidden sibling of the final partition, which is then
renamed over it (``fs_swap.publish_dir``). Readers list ``ds=…`` directories and skip
names starting with ``.`` or ``_``, so they see the old partition or the new one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from recsys_core.dates import parse_ds
from recsys_core.errors import ConfigError, InputError
from recsys_core.fs_swap import delete_dir, filesystem, is_dir, list_dir, publish_dir
from recsys_core.paths import staging_path
from recsys_core.publish.contract import SCHEMA, check_ranks, conform, expired
from recsys_core.publish.hooks import Hook, fire

log = logging.getLogger(__name__)

PART_FILE = "part-00000.parquet"


def open_dataset(path: str) -> pads.Dataset:
    """The Parquet files under ``path``; names starting with ``.`` or ``_`` are skipped."""
    fs, inner = filesystem(path)
    return pads.dataset(inner, format="parquet", filesystem=fs)


def read_batches(path: str, batch_rows: int = 100_000) -> Iterator[pa.RecordBatch]:
    """Stream a published partition as contract batches of at most ``batch_rows`` rows."""
    dataset = open_dataset(path)
    yield from dataset.to_batches(columns=list(SCHEMA.names), batch_size=batch_rows)


def publish_partition(source: str, final: str, ds: str, hook: Hook | None = None) -> int:
    """Copy the staged partition ``source`` to ``final`` atomically; return its row count.

    On any failure (bad input, a hook raising, an I/O error) ``final`` is left as it was.
    """
    if not is_dir(source):
        raise InputError(f"no staging partition at {source}: run the score job for ds={ds} first")
    where = f"staging partition {source}"
    dataset = open_dataset(source)
    rows = 0

    def write(staging: str) -> None:
        nonlocal rows
        fs, inner = filesystem(f"{staging}/{PART_FILE}")
        with pq.ParquetWriter(inner, SCHEMA, filesystem=fs, compression="zstd") as writer:
            for batch in dataset.to_batches():
                batch = conform(batch, ds, where)
                writer.write_batch(batch)
                rows += batch.num_rows
        fire(hook, "after_staging", path=staging, rows=rows)
        if rows == 0:
            raise InputError(f"{where} has no rows (no parquet files, or empty ones)")
        check_ranks(open_dataset(staging).to_table(columns=["user_id", "rank"]), where)
        fire(hook, "before_swap", path=staging, rows=rows)

    publish_dir(final, write)
    log.info("published %s rows to %s", f"{rows:,}", final)
    return rows


def published_ds(table_dir: str) -> list[str]:
    """The ``ds`` of each ``ds=YYYY-MM-DD`` directory under ``table_dir``, ascending."""
    found = []
    for info in list_dir(table_dir):
        name = info.base_name
        if info.type != pafs.FileType.Directory or not name.startswith("ds="):
            continue
        try:
            parse_ds(name[3:])
        except ConfigError:
            continue
        found.append(name[3:])
    return sorted(found)


def drop_partitions(table_dir: str, dss: list[str]) -> None:
    """Delete these partitions; each is first renamed to a hidden name so it vanishes whole."""
    fs, _ = filesystem(table_dir)
    for ds in dss:
        final = f"{table_dir}/ds={ds}"
        hidden = staging_path(final) + "-expired"
        fs.move(filesystem(final)[1], filesystem(hidden)[1])
        delete_dir(hidden)


def apply_retention(table_dir: str, keep: int) -> list[str]:
    """Keep the ``keep`` newest partitions of ``table_dir``; return the ``ds`` deleted."""
    doomed = expired(published_ds(table_dir), keep)
    drop_partitions(table_dir, doomed)
    if doomed:
        log.info("retention (keep %d): deleted %s from %s", keep, ", ".join(doomed), table_dir)
    return doomed
