"""Publish a directory atomically on any pyarrow filesystem (local paths and URIs).

A table partition is written into a hidden staging sibling (``paths.staging_path``) and
renamed over the final path only once it is complete, so a reader never sees a
half-written partition and a failure leaves the previous one in place. The Spark jobs
do the same through the JVM (``recsys_core.spark.fs.swap_in``); this is the
Spark-free version for the torch and publish side.

Replacing a directory takes two renames (the old one aside, the new one in): a process
killed between them leaves no ``final`` and the old one in ``.staging-<name>-<id>-old``.
``recover(final)``, which ``publish_dir`` runs first, puts such an orphan back and
removes every other leftover of an interrupted publish of ``final``; writers hold the
warehouse lock (``recsys_core.lock``), so no leftover belongs to a live writer. The
published recommendations table avoids the window altogether: its partitions are one
file replaced by one rename (``publish.parquet_table``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pyarrow.fs as pafs

from recsys_core.paths import staging_path

log = logging.getLogger(__name__)


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of ``path`` (a local absolute path or a URI) and the path inside it."""
    return pafs.FileSystem.from_uri(path)


def exists(path: str) -> bool:
    fs, inner = filesystem(path)
    return fs.get_file_info(inner).type != pafs.FileType.NotFound


def is_dir(path: str) -> bool:
    fs, inner = filesystem(path)
    return fs.get_file_info(inner).type == pafs.FileType.Directory


def delete_dir(path: str) -> None:
    """Delete a directory and its contents; nothing happens when it does not exist."""
    fs, inner = filesystem(path)
    if fs.get_file_info(inner).type != pafs.FileType.NotFound:
        fs.delete_dir(inner)


def list_dir(path: str) -> list[pafs.FileInfo]:
    """The direct children of ``path``; empty when it does not exist."""
    fs, inner = filesystem(path)
    if fs.get_file_info(inner).type != pafs.FileType.Directory:
        return []
    return fs.get_file_info(pafs.FileSelector(inner))


def read_json(path: str) -> dict:
    """A JSON document (UTF-8) at ``path``; FileNotFoundError when it is absent."""
    fs, inner = filesystem(path)
    with fs.open_input_stream(inner) as f:
        return json.loads(f.read().decode("utf-8"))


def write_json(path: str, document: dict) -> None:
    """Write ``document`` as indented UTF-8 JSON to ``path`` (replacing the file)."""
    fs, inner = filesystem(path)
    with fs.open_output_stream(inner) as f:
        f.write(json.dumps(document, indent=2).encode("utf-8"))


def swap_in(staging: str, final: str) -> None:
    """Replace ``final`` by ``staging``; the old one is moved aside until the new one is in."""
    fs, final_inner = filesystem(final)
    _, staging_inner = filesystem(staging)
    old = None
    if fs.get_file_info(final_inner).type != pafs.FileType.NotFound:
        old = filesystem(staging_path(final) + "-old")[1]
        fs.move(final_inner, old)
    try:
        fs.move(staging_inner, final_inner)
    except Exception:
        if old is not None:
            fs.move(old, final_inner)
        raise
    if old is not None:
        fs.delete_dir(old)


def recover(final: str) -> list[str]:
    """Undo what an interrupted ``swap_in`` or publish of ``final`` left; return what was removed.

    When ``final`` is missing and the old copy a killed swap moved aside exists, the old
    copy is renamed back. Every other hidden ``.staging-<name>-*`` sibling is deleted.
    Call it only while holding the warehouse lock (no other writer of ``final`` is alive).
    """
    parent, name = final.rstrip("/").rsplit("/", 1)
    prefix = f".staging-{name}-"
    leftovers = sorted((i for i in list_dir(parent) if i.base_name.startswith(prefix)), key=lambda i: i.mtime_ns or 0)
    fs, final_inner = filesystem(final)
    if leftovers and fs.get_file_info(final_inner).type == pafs.FileType.NotFound:
        orphans = [i for i in leftovers if i.base_name.endswith("-old") and i.type == pafs.FileType.Directory]
        if orphans:
            fs.move(orphans[-1].path, final_inner)
            log.warning("restored %s from %s, left by a swap that was interrupted", final, orphans[-1].path)
            leftovers.remove(orphans[-1])
    for info in leftovers:
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(info.path)
        else:
            fs.delete_file(info.path)
    if leftovers:
        log.info("removed %d leftover(s) of an interrupted publish of %s", len(leftovers), final)
    return [i.path for i in leftovers]


def publish_dir(final: str, write: Callable[[str], None]) -> None:
    """Call ``write(staging)`` on a fresh hidden sibling of ``final``, then swap it in.

    Whatever ``write`` raises propagates after the staging directory is removed; ``final``
    is then exactly as it was. Leftovers of an interrupted earlier publish are cleaned first.
    """
    recover(final)
    staging = staging_path(final)
    fs, inner = filesystem(staging)
    fs.create_dir(inner, recursive=True)
    try:
        write(staging)
        swap_in(staging, final)
    finally:
        if fs.get_file_info(inner).type != pafs.FileType.NotFound:
            fs.delete_dir(inner)
