"""The Parquet side of publish: ``recommendations/ds=…/`` replaced whole, and retention.

A partition is one file, ``ds=…/part-00000.parquet``. The scoring job's staging partition
is read a row group at a time, conformed to the contract and checked, and becomes that one
file in a hidden sibling directory of the partition (``.staging-ds=…-<id>``, which readers
skip as they skip every name starting with ``.`` or ``_``): a byte copy of the staged file
when the partition is one file already in the contract's schema (what the local scorer
writes: nothing to re-encode), otherwise the conformed rows written as one zstd file
(Spark's part files, a ``ds`` column, other types). Then it is swapped in by one rename:

- the partition exists: the new file is renamed over ``part-00000.parquet``. ``rename(2)``
  replaces the file atomically (an object store replaces the object whole), so the
  partition directory never goes away and its one file is the old one or the new one,
  whatever instant the process dies at; a reader that opened the old file keeps reading it.
- it does not exist yet: the hidden directory is renamed to ``ds=…`` (on an object store,
  where directories are only prefixes, the file is moved to ``ds=…/part-00000.parquet``):
  the partition appears whole.

An interrupted publish leaves at most a hidden ``.staging-ds=…-*`` directory, which the
next publish removes (``fs_swap.recover``) before it writes. Supported: local and network
filesystems with POSIX rename (ext4, xfs, NFS) and object stores (S3, GCS); not HDFS,
whose rename does not replace an existing file.
"""

from __future__ import annotations

import contextlib
import logging
import re

import numpy as np
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from recsys_core.dates import parse_ds
from recsys_core.errors import ConfigError, InputError, reading
from recsys_core.fs_swap import delete_dir, filesystem, is_dir, list_dir, recover
from recsys_core.model_version import mismatch
from recsys_core.paths import staging_path
from recsys_core.publish.contract import SCHEMA, check_ranks, conform, expired, rank_keys
from recsys_core.publish.hooks import Hook, fire
from recsys_core.publish.parquet_read import file_schemas, read_batches

log = logging.getLogger(__name__)

PART_FILE = "part-00000.parquet"
BATCH_ROWS = 1 << 20  # rows a batch at most when reading the staged files (one row group, usually)


def publish_partition(source: str, final: str, ds: str, hook: Hook | None = None,
                      model_version: str | None = None) -> int:  # fmt: skip
    """Copy the staged partition ``source`` to ``final`` atomically; return its row count.

    With ``model_version``, every row must carry that version. On any failure (bad input,
    a hook raising, an I/O error, the process killed) ``final`` is left as it was.
    Memory: a batch of rows, and 8 bytes a row for the rank check.
    """
    if not is_dir(source):
        raise InputError(f"no staging partition at {source}: run the score job for ds={ds} first")
    where = f"staging partition {source}"
    fix = f"re-run score, then check, for ds={ds}"
    damaged = ("staged recommendations (a parquet file is damaged)", fix)
    with reading(source, *damaged):
        schemas = file_schemas(source)
    # one file in the contract's schema (the local scorer's): published as it is
    [(only, schema)] = schemas.items() if len(schemas) == 1 else [(None, None)]
    copy = only if schema is not None and schema.equals(SCHEMA) else None
    recover(final)  # what an interrupted publish of this partition left
    fs, final_inner = filesystem(final)
    staging = staging_path(final)
    staging_inner = filesystem(staging)[1]
    fs.create_dir(staging_inner, recursive=True)
    rows, versions, keys = 0, set(), []
    try:
        part = f"{staging_inner}/{PART_FILE}"
        with contextlib.ExitStack() as stack:
            writer = None if copy else stack.enter_context(
                pq.ParquetWriter(part, SCHEMA, filesystem=fs, compression="zstd"))  # fmt: skip
            batches = read_batches(source, BATCH_ROWS)
            while True:
                with reading(source, *damaged):
                    batch = next(batches, None)
                if batch is None:
                    break
                batch = conform(batch, ds, where)
                if writer is not None:
                    writer.write_batch(batch)
                versions.update(pc.unique(batch.column("model_version")).to_pylist())
                keys.append(rank_keys(batch))
                rows += batch.num_rows
        if copy is not None:
            fs.copy_file(copy, part)
        fire(hook, "after_staging", path=staging, rows=rows)
        if rows == 0:
            raise InputError(f"{where} has no rows (no parquet files, or empty ones)")
        if model_version is not None and versions != {model_version}:
            staged = ", ".join(sorted(map(str, versions)))
            raise InputError(mismatch(ds, staged, model_version, "the staged rows"))
        all_keys = np.concatenate(keys)
        del keys
        check_ranks(all_keys, where)
        fire(hook, "before_swap", path=staging, rows=rows)
        _swap_file_in(fs, staging_inner, final_inner)
    finally:
        if fs.get_file_info(staging_inner).type != pafs.FileType.NotFound:
            fs.delete_dir(staging_inner)
    how = "the staged file" if copy else "rewritten"
    log.info("published %s rows to %s (%s)", f"{rows:,}", final, how)
    return rows


def _swap_file_in(fs: pafs.FileSystem, staging_inner: str, final_inner: str) -> None:
    """Make ``staging/part-00000.parquet`` the partition's one file with a single rename."""
    info = fs.get_file_info(final_inner)
    if info.type == pafs.FileType.NotFound and isinstance(fs, pafs.LocalFileSystem):
        fs.move(staging_inner, final_inner)  # a new partition appears whole
        return
    if info.type == pafs.FileType.File:
        raise InputError(f"{final_inner} is a file, not a partition directory")
    fs.create_dir(final_inner, recursive=True)
    fs.move(f"{staging_inner}/{PART_FILE}", f"{final_inner}/{PART_FILE}")  # replaces the old file atomically
    others = [i for i in fs.get_file_info(pafs.FileSelector(final_inner)) if i.base_name != PART_FILE]
    for other in others:  # only a partition written by something else has more files
        log.warning("removing %s from the published partition (it holds only %s)", other.path, PART_FILE)
        if other.type == pafs.FileType.Directory:
            fs.delete_dir(other.path)
        else:
            fs.delete_file(other.path)


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


_LEFTOVER = re.compile(r"^\.staging-(ds=\d{4}-\d{2}-\d{2})-[0-9a-f]{8}(-old|-expired)?$")


def clean_leftovers(table_dir: str) -> list[str]:
    """``fs_swap.recover`` every partition of ``table_dir`` that an interrupted run left hidden copies of."""
    names = sorted({m.group(1) for i in list_dir(table_dir) if (m := _LEFTOVER.match(i.base_name))})
    return [path for name in names for path in recover(f"{table_dir}/{name}")]


def apply_retention(table_dir: str, keep: int) -> list[str]:
    """Keep the ``keep`` newest partitions of ``table_dir``; return the ``ds`` deleted."""
    doomed = expired(published_ds(table_dir), keep)
    drop_partitions(table_dir, doomed)
    if doomed:
        log.info("retention (keep %d): deleted %s from %s", keep, ", ".join(doomed), table_dir)
    return doomed
