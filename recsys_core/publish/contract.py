"""The ``recommendations`` table contract and the checks a partition passes before publish.

One row per (ds, user_id, rank): the film at that rank of the user's top-N. In Parquet
``ds`` is the partition directory (``recommendations/ds=…/``) and not a column of the
files, as Spark, DuckDB and pandas expect of a hive-partitioned table; in SQL it is a column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_core.errors import ConfigError, InputError

SOURCES = ("model", "popularity")
# Written into the staging partition by the quality gate (jobs/check.py) when it passes;
# publish refuses a partition without it.
CHECK_FILE = "_check.json"

# Column order of the Parquet files, the SQL load and the SQL table (after ds).
SCHEMA = pa.schema([
    ("user_id", pa.int32()),
    ("rank", pa.int16()),
    ("movie_id", pa.int32()),
    ("score", pa.float32()),
    ("source", pa.string()),
    ("model_version", pa.string()),
])  # fmt: skip
COLUMNS = tuple(SCHEMA.names)
NOT_NULL = ("user_id", "rank", "movie_id", "source")


@dataclass(frozen=True)
class SqlColumn:
    """One column of the SQL table.

    ``arrow_type`` names the column's SQL type through ``SQL_TYPES``; ``check`` is the
    expression of its ``CHECK (…)`` constraint (portable SQL), or None for no check.
    """

    name: str
    arrow_type: pa.DataType
    not_null: bool
    check: str | None = None


# The SQL table, which both sinks create from this (sink.table_definition): ``ds`` first
# (a DATE; in SQLite ISO text, which sorts by date), then the columns of SCHEMA in order.
_SQL_CHECKS = {
    "rank": "rank >= 1",
    "source": "source IN ({})".format(", ".join(f"'{source}'" for source in SOURCES)),
}
SQL_COLUMNS = (
    SqlColumn("ds", pa.date32(), not_null=True),
    *(
        SqlColumn(field.name, field.type, field.name in NOT_NULL, _SQL_CHECKS.get(field.name))
        for field in SCHEMA
    ),
)
PRIMARY_KEY = ("ds", "user_id", "rank")
USER_INDEX = ("user_id", "ds")  # the index of per-user lookups, newest ds last
# The declared column type of each Arrow type, per sink kind (sql.sink_kind). A column whose
# Arrow type is missing here cannot be created: sink.table_definition raises ValueError.
SQL_TYPES: dict[str, dict[pa.DataType, str]] = {
    "sqlite": {pa.date32(): "TEXT", pa.int16(): "INTEGER", pa.int32(): "INTEGER",
               pa.float32(): "REAL", pa.string(): "TEXT"},
    "postgres": {pa.date32(): "date", pa.int16(): "smallint", pa.int32(): "integer",
                 pa.float32(): "real", pa.string(): "text"},
}  # fmt: skip


def check_keep(keep: int) -> int:
    """Retention keeps the ``keep`` newest ``ds`` partitions; fewer than one is a ConfigError."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ConfigError(f"--keep must be a whole number of partitions, at least 1, got {keep!r}")
    return keep


def expired(partitions: list[str], keep: int) -> list[str]:
    """The ``ds`` values retention deletes: all but the ``keep`` newest (ascending order)."""
    check_keep(keep)
    return sorted(partitions)[:-keep]


def conform(batch: pa.RecordBatch, ds: str, where: str) -> pa.RecordBatch:
    """Cast a staged batch to ``SCHEMA`` and check its values; InputError names the problem.

    A ``ds`` column in the staged files is allowed when it holds ``ds`` only, and dropped.
    Casts are safe: an id or rank that does not fit its type is an error, not a wrap-around.
    """
    names = batch.schema.names
    missing = [name for name in COLUMNS if name not in names]
    if missing:
        raise InputError(f"{where}: missing column(s) {', '.join(missing)} (has {', '.join(names)})")
    if "ds" in names:
        _check_ds_column(batch.column("ds"), ds, where)
    arrays = []
    for field in SCHEMA:
        column = batch.column(field.name)
        try:
            arrays.append(column.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InputError(f"{where}: column {field.name} ({column.type}) does not fit {field.type}: {exc}") from None
    conformed = pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)
    _check_values(conformed, where)
    return conformed


def _check_ds_column(column: pa.Array, ds: str, where: str) -> None:
    as_text = column.cast(pa.string())
    if as_text.null_count or not pc.all(pc.equal(as_text, ds)).as_py():
        other = pc.filter(as_text, pc.invert(pc.fill_null(pc.equal(as_text, ds), False)))
        raise InputError(f"{where}: column ds holds {other[0].as_py()!r}, not only {ds}")


def _first(batch: pa.RecordBatch, mask: pa.Array, column: str) -> object:
    return pc.filter(batch.column(column), mask)[0].as_py()


def _check_values(batch: pa.RecordBatch, where: str) -> None:
    for name in NOT_NULL:
        nulls = batch.column(name).null_count
        if nulls:
            raise InputError(f"{where}: column {name} has {nulls} null(s)")
    for name in ("user_id", "movie_id", "rank"):
        bad = pc.less(batch.column(name), 1)
        if pc.any(bad).as_py():
            raise InputError(f"{where}: column {name} must be >= 1, found {_first(batch, bad, name)}")
    bad = pc.invert(pc.is_in(batch.column("source"), value_set=pa.array(SOURCES)))
    if pc.any(bad).as_py():
        raise InputError(f"{where}: column source must be one of {SOURCES}, found {_first(batch, bad, 'source')!r}")
    bad = pc.invert(pc.is_finite(batch.column("score")))
    if pc.any(bad).as_py():
        raise InputError(f"{where}: column score must be finite, found {_first(batch, bad, 'score')}")


def rank_keys(batch: pa.RecordBatch) -> np.ndarray:
    """(n,) int64 ``user_id << 16 | rank`` of a conformed batch (ranks 1..32767): sorted keys
    are in (user_id, rank) order."""
    user = batch.column("user_id").to_numpy().astype(np.int64)
    return (user << 16) | batch.column("rank").to_numpy().astype(np.int64)


RANK_CHUNK = 1 << 22  # keys compared at a time by check_ranks (bounds its temporaries)


def check_ranks(keys: np.ndarray, where: str) -> None:
    """Each user's ranks must be exactly 1..n: no duplicate (user_id, rank) and no gap.

    ``keys`` are the ``rank_keys`` of every row of the partition (8 bytes a row), in any
    order; they are sorted in place. Sorted, each row is its user's first with rank 1 or
    the key after the row before it (same user, rank + 1): a check of neighbours.
    """
    keys.sort()
    bad_users: list[np.ndarray] = []
    for lo in range(0, len(keys), RANK_CHUNK):
        chunk = keys[max(lo - 1, 0) : lo + RANK_CHUNK]  # with the key before it
        before, key = chunk[:-1], chunk[1:]
        ok = np.where(key >> 16 != before >> 16, key & 0xFFFF == 1, key == before + 1)
        bad = chunk[1:][~ok]
        if lo == 0 and len(chunk) and chunk[0] & 0xFFFF != 1:
            bad = np.r_[chunk[:1], bad]
        bad_users.append(np.unique(bad >> 16))
    offenders = np.unique(np.concatenate(bad_users)) if bad_users else np.zeros(0, np.int64)
    if len(offenders):
        user = int(offenders[0])
        lo, hi = np.searchsorted(keys, [user << 16, (user + 1) << 16])
        mine = keys[lo:hi] & 0xFFFF
        raise InputError(
            f"{where}: ranks are not 1..n for {len(offenders)} user(s), e.g. user_id {user}: {len(mine)} "
            f"rows, {len(np.unique(mine))} distinct ranks, max rank {int(mine.max())}"
        )
