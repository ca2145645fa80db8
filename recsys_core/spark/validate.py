"""Tagging each row of a read file with the first rule it breaks (``reason``; null = valid).

Structural faults found while reading (``recsys_core.spark.read``: bytes, quoting, field
count) come first. Then every column, read as text, is cast with ``try_cast``, so one
malformed field marks its row (``unparsable:<column>``) instead of failing the job or
turning silently into null; then the file's own rules (ranges, ids, lookups).
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recsys_core.data.schemas import FileSpec
from recsys_core.spark.read import BLOCK, LINE, POS, RAW_PREFIX, STRUCTURAL, escaped_line, raw

REASON = "reason"
RECORD = "record"  # the row's fields as JSON (text as read); null for a structural reject
RAW_LINE = "raw"  # the line as in the file, escaped (see read.escaped_line); rejects only

__all__ = [
    "BLOCK", "POS", "RAW_LINE", "REASON", "RECORD", "first_reason", "parse_rules",
    "positive_id_rules", "raw", "row_reason", "tag_rejects", "typed_columns", "with_typed",
]  # fmt: skip


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


def row_reason(spec: FileSpec, rules: Sequence[tuple[Column, str]]) -> Column:
    """The reason a row of a ``with_typed`` frame is rejected (structural first), else null."""
    return F.coalesce(F.col(STRUCTURAL), first_reason(parse_rules(spec) + list(rules)))


def tag_rejects(
    df: DataFrame, spec: FileSpec, rules: Sequence[tuple[Column, str]], drop: Sequence[str] = ()
) -> DataFrame:
    """Typed columns plus ``reason``, and for rejected rows only: ``record``, ``raw`` and
    the line's position (``_block``, ``_pos``; null for valid rows, which need none).

    ``df`` comes from :func:`with_typed` on a ``read_source`` frame (possibly joined with
    lookup columns, named in ``drop`` so they do not leak into the output).
    """
    tagged = df.withColumn(REASON, row_reason(spec, rules))
    rejected = F.col(REASON).isNotNull()
    record = F.to_json(F.struct(*[raw(n).alias(n) for n in spec.column_names]))
    tagged = tagged.select(
        "*",
        F.when(rejected & F.col(STRUCTURAL).isNull(), record).alias(RECORD),
        F.when(rejected, escaped_line()).alias(RAW_LINE),
    )
    tagged = tagged.withColumn(BLOCK, F.when(rejected, F.col(BLOCK))).withColumn(POS, F.when(rejected, F.col(POS)))
    return tagged.drop(*[RAW_PREFIX + n for n in spec.column_names], STRUCTURAL, LINE, *drop)
