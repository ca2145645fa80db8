"""The ``recommendations`` table contract and the checks a partition passes before publish.

One row per (ds, user_id, rank): the film at that rank of the user's top-N. In Parquet
``ds`` is the partition directory (``recommendations/ds=…/``) and not a column of the
files, as Spark, DuckDB and pandas expect of a hive-partitioned table; in SQL it is a column.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def check_ranks(keys: pa.Table, where: str) -> None:
    """Each user's ranks must be exactly 1..n: no duplicate (user_id, rank) and no gap.

    Ranks are >= 1 (checked per batch), so count == distinct count == max rank is exactly
    that. Needs the two key columns of the whole partition (6 bytes a row).
    """
    per_user = keys.group_by("user_id").aggregate(
        [("rank", "count"), ("rank", "count_distinct"), ("rank", "max")]
    )
    count = per_user.column("rank_count")
    bad = pc.or_(
        pc.not_equal(count, per_user.column("rank_count_distinct")),
        pc.not_equal(count, per_user.column("rank_max").cast(pa.int64())),
    )
    offenders = per_user.filter(bad)
    if offenders.num_rows:
        row = offenders.slice(0, 1).to_pylist()[0]
        raise InputError(
            f"{where}: ranks are not 1..n for {offenders.num_rows} user(s), e.g. user_id "
            f"{row['user_id']}: {row['rank_count']} rows, {row['rank_count_distinct']} distinct "
            f"ranks, max rank {row['rank_max']}"
        )
