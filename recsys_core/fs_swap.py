"""Publish a directory atomically on any pyarrow filesystem (local paths and URIs).

A table partition is written into a hidden staging sibling (``paths.staging_path``) and
renamed over the final path only once it is complete, so a reader never sees a
half-written partition and a failure leaves the previous one in place. The Spark jobs
do the same through the JVM (``recsys_core.spark.fs.swap_in``); this is the
Spark-free version for the torch and publish side.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pyarrow.fs as pafs

from recsys_core.paths import staging_path


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


def publish_dir(final: str, write: Callable[[str], None]) -> None:
    """Call ``write(staging)`` on a fresh hidden sibling of ``final``, then swap it in.

    Whatever ``write`` raises propagates after the staging directory is removed; ``final``
    is then exactly as it was.
    """
    staging = staging_path(final)
    fs, inner = filesystem(staging)
    fs.create_dir(inner, recursive=True)
    try:
        write(staging)
        swap_in(staging, final)
    finally:
        if fs.get_file_info(inner).type != pafs.FileType.NotFound:
            fs.delete_dir(inner)
