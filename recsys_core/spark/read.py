"""Reading one file of a drop: raw line bytes -> decoded text -> the header's fields, faults tagged.

Why not ``spark.read.csv`` on the file directly: its CSV reader decodes before it parses
and keeps only the fields, so several faults are invisible in what it returns. Here each
line is read as bytes (``spark.read.text`` keeps a line's bytes undecoded), checked, and
only then split into fields with Spark's own CSV parser (``from_csv``: the same univocity
parser, PERMISSIVE mode, with its corrupt-record column). What each check is for:

- ``invalid_utf8``: Spark's UTF-8 decoding replaces undecodable bytes with U+FFFD and
  says nothing (``Cit\\xe9`` becomes ``Cit�``), so the bytes are validated before decoding.
- ``stray_bom``: a byte-order mark after the file's first bytes (two files concatenated)
  is a character to the CSV parser and would end up glued to the first field.
- ``control_character`` (U+0000-U+001F except tab, U+007F-U+009F): binary garbage, a
  UTF-16 file, or Windows-1252 punctuation read as Latin-1; never MovieLens text.
- ``replacement_character``: U+FFFD in the text is the mark of an earlier lossy decoding;
  the original character is gone, so the row is rejected rather than stored wrong.
- ``unclosed_quote`` / ``stray_quote`` (quoted layouts): the parser closes an unclosed
  quote at the end of the line and keeps stray quotes as text, with the right number of
  fields whenever the quote is in the last field, so its corrupt-record column cannot see
  these; a line with a quote must match the RFC 4180 grammar (quoted fields with doubled
  quotes, unquoted fields without any).
- ``wrong_field_count``: Spark's corrupt-record column (set when the parser finds more or
  fewer fields than the header's).

Lines, not multi-line records: GroupLens files never break a line inside a field, and in
``multiLine`` mode one unclosed quote swallows the rest of the file into one record (and
the file is read by a single task); line by line, a broken line is one rejected record.
Blank lines are not records and are skipped, as Spark's CSV reader does.
"""

from __future__ import annotations

import codecs
import csv
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys_core.data.layouts import CP1252, GENRE_SPELLING, LATIN1, UTF8, Source
from recsys_core.data.schemas import NO_GENRES
from recsys_core.errors import InputError
from recsys_core.spark import fs

RAW_PREFIX = "_raw_"
STRUCTURAL = "_structural"  # the structural reason of a line, null when the line is sound
LINE = "_line"  # the line's bytes, undecoded (a string column that may hold invalid UTF-8)
BLOCK = "_block"  # byte offset of the file split the line was read from
POS = "_pos"  # the line's index within its Spark partition (0 = first line of the split)
CORRUPT = "_corrupt"

BOM = "\ufeff"
REPLACEMENT = "\ufffd"
CONTROL = "[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f]"
# One RFC 4180 record with ',' and '"': fields either quoted (a quote inside doubled) or
# without any quote. Possessive quantifiers keep Java's regex from backtracking (or
# recursing deeply) on long fields.
_FIELD = '(?:"(?:[^"]++|"")*+"|[^",]*+)'
WELL_FORMED_CSV = f"^{_FIELD}(?:,{_FIELD})*+$"
# The parser refuses lines with more than 20,480 fields by failing the whole job
# (univocity's maxColumns); such a line is a wrong field count, caught before parsing.
MAX_FIELDS = 20_000

# Windows-1252 = Latin-1 except 27 of the 32 C1 positions (0x80-0x9F), which hold
# punctuation; its 5 undefined bytes stay C1 controls (and are rejected as such).
_CP1252_C1 = bytes(b for b in range(0x80, 0xA0) if b not in (0x81, 0x8D, 0x8F, 0x90, 0x9D))
CP1252_FROM = _CP1252_C1.decode("latin-1")
CP1252_TO = _CP1252_C1.decode("cp1252")
JAVA_CHARSET = {UTF8: "UTF-8", LATIN1: "ISO-8859-1", CP1252: "ISO-8859-1"}


@dataclass(frozen=True)
class SourceFrame:
    """A file read for validation: ``df`` has ``_raw_<column>`` per spec column (trimmed
    text, null when empty), ``_structural``, ``_line``, ``_block`` and ``_pos``."""

    source: Source
    path: str
    encoding: str
    explicit_encoding: bool
    df: DataFrame

    @property
    def filename(self) -> str:
        return self.source.filename


def raw(name: str) -> Column:
    return F.col(RAW_PREFIX + name)


def decoded(encoding: str, line: Column | None = None) -> Column:
    """The text of a line's bytes: as UTF-8 when they are valid UTF-8, else in ``encoding``.

    A line that is valid UTF-8 is read as UTF-8 whatever the file's encoding: files
    re-saved in parts mix the two, and Latin-1 text that happens to be valid UTF-8 with
    non-ASCII bytes (``Ã©``) is itself the mark of such a mix, never a title.
    """
    line = F.col(LINE) if line is None else line
    if encoding == UTF8:
        return line
    text = F.decode(line.cast("binary"), JAVA_CHARSET[encoding])  # single-byte: never fails
    if encoding == CP1252:
        text = F.translate(text, CP1252_FROM, CP1252_TO)
    return F.when(F.is_valid_utf8(line), line).otherwise(text)


def escaped_line() -> Column:
    """The line's bytes as text, losslessly: as UTF-8 when they are valid UTF-8, else with
    every byte >= 0x80 written as ``\\xNN``; backslashes doubled in both cases."""
    line = F.col(LINE)
    text = F.replace(line, F.lit("\\"), F.lit("\\\\"))
    as_bytes = F.replace(F.decode(line.cast("binary"), "ISO-8859-1"), F.lit("\\"), F.lit("\\\\"))
    per_char = F.transform(
        F.split(as_bytes, ""),
        lambda c: F.when(F.ascii(c) >= 128, F.concat(F.lit("\\x"), F.lower(F.hex(F.ascii(c))))).otherwise(c),
    )
    return F.when(F.is_valid_utf8(line), text).otherwise(F.array_join(per_char, ""))


def read_source(
    spark: SparkSession, raw_dir: str, source: Source, encoding: str, explicit_encoding: bool = False
) -> SourceFrame | None:
    """Read ``source`` from ``raw_dir``, or None when it is optional and absent.

    Raises InputError naming the file when a required file is missing or empty, the header
    is undecodable or lacks a required column, or a required file has no data rows.
    """
    path = f"{raw_dir.rstrip('/')}/{source.filename}"
    if not fs.exists(spark, path):
        if source.spec.required:
            raise InputError(f"required file {source.filename} is missing from the drop ({path})")
        return None
    if fs.size(spark, path) == 0:
        raise InputError(f"{source.filename} is empty (0 bytes{', no header row' if source.header else ''}): {path}")

    block = F.input_file_block_start()
    pos = F.monotonically_increasing_id() - F.shiftleft(F.spark_partition_id().cast("long"), 33)
    lines = spark.read.text(path).select(F.col("value").alias(LINE), block.alias(BLOCK), pos.alias(POS))
    # A split's lines are numbered from 0 within their partition, and the split at offset 0
    # always opens its partition, so (0, 0) is the file's first line.
    first = (F.col(BLOCK) == 0) & (F.col(POS) == 0)
    if source.header:
        names = _header(lines.where(first), source, encoding, explicit_encoding)
        lines = lines.where(~first)
    else:
        names = list(source.fields)
        # a byte-order mark that opens the file is the file's, not the first field's
        bom = F.unhex(F.lit(BOM.encode().hex()))
        strip = first & F.startswith(F.col(LINE).cast("binary"), bom)
        lines = lines.withColumn(LINE, F.when(strip, F.expr(f"substring({LINE}, 2)")).otherwise(F.col(LINE)))
    lines = lines.where(F.trim(F.col(LINE)) != "")

    df = _parse(lines, source, names, encoding)
    if source.spec.required and df.limit(1).count() == 0:
        raise InputError(f"{source.filename} has {'a header but ' if source.header else ''}no data rows: {path}")
    return SourceFrame(source, path, encoding, explicit_encoding, df)


def _header(first_line: DataFrame, source: Source, encoding: str, explicit: bool) -> list[str]:
    """The column names of the header row (the file's first line)."""
    rows = first_line.select(F.col(LINE).cast("binary").alias("b")).limit(1).collect()
    data = bytes(rows[0]["b"]) if rows else b""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise InputError(f"{source.filename} is UTF-16 (it starts with a UTF-16 byte-order mark): save it as UTF-8")
    data = data.removeprefix(BOM.encode())
    try:
        text = codecs.decode(data, encoding)
    except UnicodeDecodeError as exc:
        raise InputError(not_decodable_message(source.filename, encoding, 1, explicit)) from exc
    names = [n.strip().lstrip(BOM) for n in next(csv.reader([text], delimiter=source.sep), [])]
    missing = [c for c in source.spec.column_names if c not in names]
    if missing:
        raise InputError(
            f"{source.filename}: missing required column(s) {', '.join(missing)} "
            f"(header has {', '.join(names) or 'nothing'})"
        )
    duplicated = sorted({n for n in names if names.count(n) > 1 and n in source.spec.column_names})
    if duplicated:
        raise InputError(f"{source.filename}: column(s) {', '.join(duplicated)} appear twice in the header")
    return names


def not_decodable_message(filename: str, encoding: str, line: int, explicit: bool) -> str:
    """The one-line error for a file that does not decode in its encoding."""
    hint = (
        "pass --encoding latin-1 (or --encoding FILE=latin-1 for this file alone) if it is Latin-1, "
        "--encoding cp1252 if it was saved on Windows, or convert it to UTF-8"
    )
    given = "given with --encoding" if explicit else "the contract"
    return f"{filename} is not valid {encoding.upper()} ({given}): line {line} is the first bad line; {hint}"


def _parse(lines: DataFrame, source: Source, names: list[str], encoding: str) -> DataFrame:
    """Decode, check and split the lines; the spec's columns as trimmed text plus the checks."""
    line = F.col(LINE)
    text = decoded(encoding)
    checks: list[tuple[Column, str]] = []
    if encoding == UTF8:
        checks.append((~F.is_valid_utf8(line), "invalid_utf8"))
    checks += [
        (line.contains(BOM), "stray_bom"),
        (text.rlike(CONTROL), "control_character"),
        (text.contains(REPLACEMENT), "replacement_character"),
    ]
    if source.quoting:
        quotes = F.octet_length(line) - F.octet_length(F.replace(line, F.lit('"'), F.lit("")))
        has_quote = line.contains('"')
        checks += [
            (has_quote & (quotes % 2 == 1), "unclosed_quote"),
            (has_quote & ~text.rlike(WELL_FORMED_CSV), "stray_quote"),
        ]
    # Only a line longer than MAX_FIELDS bytes can have that many fields: count them then.
    separators = F.size(F.split(line, _regex_literal(source.sep))) - 1
    too_many = (F.octet_length(line) > MAX_FIELDS) & (separators >= MAX_FIELDS)
    checks.append((too_many, "wrong_field_count"))

    # fields by position: header names may be anything (empty, spaces); the spec's are found by name
    schema = ", ".join(f"_f{i} string" for i in range(len(names))) + f", {CORRUPT} string"
    index = {n: i for i, n in reversed(list(enumerate(names)))}
    options = {
        "sep": source.sep,
        "mode": "PERMISSIVE",
        "columnNameOfCorruptRecord": CORRUPT,
        "quote": '"' if source.quoting else "",
        "escape": '"' if source.quoting else "\\",
    }
    parsed = F.from_csv(F.when(~too_many, text), schema, options)
    df = lines.select(LINE, BLOCK, POS, parsed.alias("_p"))
    structural = _first_match(checks + [(F.col(f"_p.{CORRUPT}").isNotNull(), "wrong_field_count")])

    columns = {c: _clean(F.col(f"_p._f{index[c]}")) for c in source.spec.column_names if c in index}
    if source.genre_flags:
        flags = [_clean(F.col(f"_p._f{index[f]}")) for f in source.flag_fields]
        columns["genres"] = _genres_from_flags(flags, source.genre_flags)
        bad_flag = F.lit(False)
        for flag in flags:
            bad_flag = bad_flag | flag.isNull() | ~flag.isin("0", "1")
        structural = F.coalesce(structural, F.when(bad_flag, F.lit("unparsable:genres")))
    if "genres" in columns and not source.header:
        columns["genres"] = _respell_genres(columns["genres"])
    return df.select(
        *[columns[c].alias(RAW_PREFIX + c) for c in source.spec.column_names],
        structural.alias(STRUCTURAL),
        LINE,
        BLOCK,
        POS,
    )


def _clean(field: Column) -> Column:
    return F.nullif(F.trim(field), F.lit(""))


def _first_match(checks: list[tuple[Column, str]]) -> Column:
    expr = None
    for condition, reason in checks:
        expr = F.when(condition, F.lit(reason)) if expr is None else expr.when(condition, F.lit(reason))
    return expr


def _regex_literal(sep: str) -> str:
    return "".join(f"\\{c}" if not c.isalnum() else c for c in sep)


def _genres_from_flags(flags: list[Column], names: tuple[str, ...]) -> Column:
    """u.item's 0/1 genre flags -> ``A|B|C`` in flag order; ``unknown`` alone -> no genres."""
    named = [F.when(flag == "1", F.lit(name)) for flag, name in zip(flags, names) if name != "unknown"]
    joined = F.concat_ws("|", *named)
    return F.when(joined == "", F.lit(NO_GENRES)).otherwise(joined)


def _respell_genres(genres: Column) -> Column:
    """Older releases' genre names in the CSV releases' spelling (``Children's`` -> ``Children``)."""
    out = genres
    for old, new in GENRE_SPELLING.items():
        pattern = f"(^|\\|){_regex_literal(old)}(?=\\||$)"
        out = F.regexp_replace(out, pattern, f"$1{new}")
    return out
