"""Reading a drop CSV with its explicit schema, and tagging each bad row with a reason.

Every column is read as text and cast with ``try_cast``, so one malformed field marks its
row (``unparsable:<column>``) instead of failing the job or turning silently into null.
A row's ``reason`` is the first rule it breaks; valid rows have ``reason = null``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys_core.data.schemas import FileSpec
from recsys_core.errors import InputError
from recsys_core.spark import fs

RAW_PREFIX = "_raw_"
REASON = "reason"
RECORD = "record"


def read_csv(spark: SparkSession, raw_dir: str, spec: FileSpec) -> DataFrame | None:
    """The file's spec columns as trimmed text (``_raw_<name>``), or None if optional and absent.

    Raises InputError naming the file when a required file is missing, the file has no
    header, a required column is missing, or a required file has no data rows.
    """
    path = f"{raw_dir.rstrip('/')}/{spec.filename}"
    if not fs.exists(spark, path):
        if spec.required:
            raise InputError(f"required file {spec.filename} is missing from the drop ({path})")
        return None
    if fs.size(spark, path) == 0:
        raise InputError(f"{spec.filename} is empty (0 bytes, no header row): {path}")
    df = (
        spark.read.option("header", True)
        .option("quote", '"')
        .option("escape", '"')
        .option("mode", "PERMISSIVE")
        .option("encoding", "UTF-8")
        .csv(path)
    )
    df = df.toDF(*[c.strip().lstrip("\ufeff") for c in df.columns])
    missing = [c for c in spec.column_names if c not in df.columns]
    if missing:
        raise InputError(
            f"{spec.filename}: missing required column(s) {', '.join(missing)} "
            f"(header has {', '.join(df.columns) or 'nothing'})"
        )
    if spec.required and df.limit(1).count() == 0:
        raise InputError(f"{spec.filename} has a header but no data rows: {path}")
    return df.select(
        [F.nullif(F.trim(F.col(f"`{c}`")), F.lit("")).alias(RAW_PREFIX + c) for c in spec.column_names]
    )


def raw(name: str) -> Column:
    return F.col(RAW_PREFIX + name)


def typed_columns(spec: FileSpec) -> list[Column]:
    """``try_cast`` of every raw column to its spec type, under the spec name."""
    return [raw(c.name).try_cast(c.type).alias(c.name) for c in spec.columns]


def first_reason(rules: Sequence[tuple[Column, str]]) -> Column:
    """The reason of the first rule whose condition is true, else null."""
    expr = None
    for condition, reason in rules:
        expr = F.when(condition, F.lit(reason)) if expr is None else expr.when(condition, F.lit(reason))
    return expr if expr is not None else F.lit(None).cast("string")


def parse_rules(spec: FileSpec) -> list[tuple[Column, str]]:
    """Missing and unparsable fields, in column order."""
    rules: list[tuple[Column, str]] = []
    for c in spec.columns:
        if not c.nullable:
            rules.append((raw(c.name).isNull(), f"missing:{c.name}"))
        rules.append((raw(c.name).isNotNull() & F.col(c.name).isNull(), f"unparsable:{c.name}"))
    return rules


def positive_id_rules(*names: str) -> list[tuple[Column, str]]:
    return [(F.col(n) <= 0, f"non_positive_id:{n}") for n in names]


def with_typed(df: DataFrame, spec: FileSpec) -> DataFrame:
    """Keep the raw text columns and add the ``try_cast`` typed ones beside them."""
    return df.select("*", *typed_columns(spec))


def tag_rejects(
    df: DataFrame, spec: FileSpec, rules: Sequence[tuple[Column, str]], drop: Sequence[str] = ()
) -> DataFrame:
    """Typed columns plus ``reason`` and, for rejected rows only, the raw ``record`` as JSON.

    ``df`` comes from :func:`with_typed` (possibly joined with lookup columns, named in
    ``drop`` so they do not leak into the output).
    """
    tagged = df.withColumn(REASON, first_reason(parse_rules(spec) + list(rules)))
    record = F.to_json(F.struct(*[raw(n).alias(n) for n in spec.column_names]))
    tagged = tagged.withColumn(RECORD, F.when(F.col(REASON).isNotNull(), record))
    return tagged.drop(*[RAW_PREFIX + n for n in spec.column_names], *drop)
