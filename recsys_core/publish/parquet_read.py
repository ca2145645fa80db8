"""Reading a partition's Parquet files a row group at a time, in bounded memory.

Used by everything that streams a ``recommendations`` partition: the quality gate, the
Parquet side of publish and the SQL load. Why not ``pyarrow.dataset``'s scanner: when
its consumer is slower than the disk (an SQL insert, the gate's checks) it decodes the
file far ahead of it: 1.2-2.0 GiB held for a 28.3M-row file on the dev machine, whatever
``batch_readahead`` says. ``ParquetFile.iter_batches`` decodes a row group when asked
(~0.3 GiB at most for the same file), so this reads the files one by one with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from recsys_core.fs_swap import filesystem

HIDDEN = (".", "_")  # file and directory names readers skip, as pyarrow's dataset discovery does


def data_files(path: str) -> list[str]:
    """The Parquet files under the directory ``path`` (any depth), sorted by path.

    Names starting with ``.`` or ``_`` (``_SUCCESS``, ``_scoring.json``, ``.crc`` files,
    hidden staging directories) are skipped, at any level below ``path``. Paths are those
    of ``path``'s filesystem (``fs_swap.filesystem``). FileNotFoundError when ``path`` is absent.
    """
    fs, inner = filesystem(path)
    infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
    root = inner.rstrip("/") + "/"
    files = []
    for info in infos:
        relative = info.path[len(root) :] if info.path.startswith(root) else info.base_name
        hidden = any(part.startswith(HIDDEN) for part in relative.split("/"))
        if info.type == pafs.FileType.File and not hidden:
            files.append(info.path)
    return sorted(files)


def file_schemas(path: str) -> dict[str, pa.Schema]:
    """The Arrow schema of each data file of ``path`` (read from the footers only)."""
    fs, _ = filesystem(path)
    return {file: pq.read_schema(file, filesystem=fs) for file in data_files(path)}


def read_batches(path: str, batch_rows: int = 100_000, columns: Iterable[str] | None = None,
                 dictionary: Iterable[str] = ()) -> Iterator[pa.RecordBatch]:  # fmt: skip
    """The rows of every data file of ``path`` in file order, at most ``batch_rows`` a batch.

    ``columns`` None reads every column of each file; ``dictionary`` names string columns
    to read as dictionaries (a few distinct values: no string a row). A batch never spans
    two row groups. Raises what pyarrow raises for a damaged file or a missing column.
    """
    fs, _ = filesystem(path)
    wanted = None if columns is None else list(columns)
    for file in data_files(path):
        with fs.open_input_file(file) as source:
            reader = pq.ParquetFile(source, read_dictionary=list(dictionary) or None)
            yield from reader.iter_batches(batch_size=batch_rows, columns=wanted)
