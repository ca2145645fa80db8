"""Ingest: a raw MovieLens drop -> validated, as-of ``snapshot/ds=…`` parquet + quarantine.

Order of work, and why:
1. movies and genome tags first: they are the lookups that ratings, tags and genome
   scores are checked against (a rating of a film missing from movies.csv is rejected);
2. every file is tagged row by row (``reason`` null = valid) and written once to a
   scratch parquet, so counting, quarantining and keeping never re-parse the CSV;
3. the as-of cut comes before de-duplication, so a re-rating after ``ds`` can never
   replace the rating a user had on ``ds``;
4. the reject share is checked per file *after* the quarantine is written (so the bad rows
   can be inspected) and *before* the snapshot is swapped in (so a failed run publishes
   nothing).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys_core.data import schemas
from recsys_core.data.layouts import (
    LAYOUTS,
    UTF8,
    Layout,
    detect_layout,
    encoding_map,
    parse_encodings,
)
from recsys_core.dates import as_of_cutoff
from recsys_core.errors import ConfigError, InputError
from recsys_core.paths import Warehouse, staging_path
from recsys_core.spark import fs, row_rules
from recsys_core.spark.read import SourceFrame, not_decodable_message, read_source
from recsys_core.spark.validate import (
    BLOCK,
    POS,
    RAW_LINE,
    REASON,
    RECORD,
)

log = logging.getLogger(__name__)

#: Reasons that mean "these bytes are not text in the file's encoding": with the default
#: encoding they fail the run (the file is probably in another one), see _fail_if_undecodable.
UNDECODABLE = "invalid_utf8"


@dataclass
class FileReport:
    """Counts for one file; ``file`` is the name read (``u.data`` in a 100K drop)."""

    file: str
    encoding: str = UTF8
    rows_read: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    first_bad_line: dict[str, int] = field(default_factory=dict)
    after_ds: int = 0
    duplicates: int = 0
    kept: int = 0

    @property
    def reject_share(self) -> float:
        return self.rejected / self.rows_read if self.rows_read else 0.0


@dataclass
class IngestSummary:
    """What a run read and kept. ``files`` is keyed by the table's CSV name (``ratings.csv``)
    in every layout, so readers of the manifest need not know the layout."""

    ds: str
    cutoff_epoch: int
    layout: str
    files: dict[str, FileReport]
    users: int
    rated_films: int
    first_rating: str | None
    last_rating: str | None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def render(self) -> str:
        lines = [f"ingest ds={self.ds} (ratings before {_iso(self.cutoff_epoch)}), layout {self.layout}"]
        for r in self.files.values():
            reasons = ", ".join(f"{k}={v:,}" for k, v in sorted(r.rejected_by_reason.items()))
            lines.append(
                f"  {r.file:<18} read {r.rows_read:>12,}  kept {r.kept:>12,}  "
                f"rejected {r.rejected:>9,} ({r.reject_share:.3%})"
                + (f"  after ds {r.after_ds:,}" if r.after_ds else "")
                + (f"  duplicates {r.duplicates:,}" if r.duplicates else "")
                + (f"  [{reasons}]" if reasons else "")
                + (f"  ({r.encoding})" if r.encoding != UTF8 else "")
            )
        lines.append(
            f"  users {self.users:,}  rated films {self.rated_films:,}  "
            f"ratings from {self.first_rating} to {self.last_rating}"
        )
        return "\n".join(lines)


def _iso(epoch: int | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


class _Run:
    """State of one ingest run: where things go and what was counted."""

    def __init__(self, spark: SparkSession, raw_dir: str, warehouse: Warehouse, ds: str, frames: dict):
        self.spark = spark
        self.raw_dir = raw_dir
        self.ds = ds
        self.cutoff = as_of_cutoff(ds)
        self.work = warehouse.work("ingest", ds)
        self.snapshot_final = warehouse.snapshot(ds)
        self.snapshot_staging = staging_path(self.snapshot_final)
        self.quarantine_final = warehouse.quarantine(ds)
        self.frames: dict[str, SourceFrame | None] = frames
        self.reports: dict[str, FileReport] = {}
        self.checked_frames: dict[str, DataFrame] = {}
        self._line_maps: dict[str, Column] = {}

    def checked(self, spec: schemas.FileSpec, tagged: DataFrame) -> DataFrame:
        """Write the tagged rows once to scratch parquet; count them by reason and as-of.

        For files with a timestamp, the same pass counts the valid rows after ``ds``. A file
        that does not decode in its default encoding fails the run here (see
        :meth:`fail_if_undecodable`), before the other files are read.
        """
        frame = self.frames[spec.key]
        path = f"{self.work}/{spec.key}"
        tagged.write.mode("overwrite").parquet(path)
        checked = self.spark.read.parquet(path)
        late = F.lit(False)
        if "timestamp" in spec.column_names:
            late = F.col(REASON).isNull() & (F.col("timestamp") >= self.cutoff)
        rows = checked.groupBy(REASON).agg(F.count("*").alias("n"), F.sum(late.cast("long")).alias("late")).collect()
        report = FileReport(file=frame.filename, encoding=frame.encoding, rows_read=sum(r["n"] for r in rows))
        report.rejected_by_reason = {r[REASON]: r["n"] for r in rows if r[REASON] is not None}
        report.rejected = sum(report.rejected_by_reason.values())
        report.after_ds = sum(r["late"] or 0 for r in rows)
        self.reports[spec.key] = report
        self.checked_frames[spec.key] = checked
        if report.rejected:
            firsts = (
                checked.where(F.col(REASON).isNotNull())
                .groupBy(REASON)
                .agg(F.min(self.line_number(spec.key)).alias("line"))
                .collect()
            )
            report.first_bad_line = {r[REASON]: int(r["line"]) for r in firsts}
        log.info("%s: %s rows read, %s rejected", frame.filename, f"{report.rows_read:,}", f"{report.rejected:,}")
        self.fail_if_undecodable(spec.key)
        return checked

    def line_number(self, key: str) -> Column:
        """1-based line number in the file of a rejected row (from ``_block`` and ``_pos``).

        One extra pass over the file's lines, only for files with rejects: the lines per
        split (and the first index of each split's lines) give each split's first line.
        """
        if key not in self._line_maps:
            frame = self.frames[key]
            block = F.input_file_block_start()
            pos = F.monotonically_increasing_id() - F.shiftleft(F.spark_partition_id().cast("long"), 33)
            per_split = (
                self.spark.read.text(frame.path)
                .select(block.alias("b"), pos.alias("p"))
                .groupBy("b")
                .agg(F.count("*").alias("n"), F.min("p").alias("p0"))
                .orderBy("b")
                .collect()
            )
            entries, before = [], 0
            for r in per_split:
                entries += [F.lit(r["b"]), F.lit(before - r["p0"] + 1)]
                before += r["n"]
            self._line_maps[key] = F.create_map(*entries)[F.col(BLOCK)] + F.col(POS)
        return self._line_maps[key]

    def fail_if_undecodable(self, key: str) -> None:
        """UTF-8 is the contract: a file with undecodable lines read in its default encoding
        fails the run, naming the first bad line and the ``--encoding`` to pass (the
        quarantine of what was read so far is written for inspection). With ``--encoding``
        given, such lines are ordinary rejects, counted against ``--max-reject-share``."""
        frame, report = self.frames[key], self.reports[key]
        if frame.explicit_encoding or UNDECODABLE not in report.rejected_by_reason:
            return
        _write_quarantine(self)
        raise InputError(
            not_decodable_message(frame.filename, frame.encoding, report.first_bad_line[UNDECODABLE], False)
            + f" ({report.rejected_by_reason[UNDECODABLE]:,} undecodable lines are in {self.quarantine_final};"
            " nothing was published)"
        )

    def valid(self, checked: DataFrame) -> DataFrame:
        return checked.filter(F.col(REASON).isNull()).drop(REASON, RECORD, RAW_LINE, BLOCK, POS)

    def keep(self, key: str, df: DataFrame) -> None:
        df.write.mode("overwrite").parquet(f"{self.snapshot_staging}/{key}")


def _as_of(run: _Run, valid: DataFrame) -> DataFrame:
    return valid.filter(F.col("timestamp") < run.cutoff)


def _present_files(spark: SparkSession, raw_dir: str) -> list[str]:
    """Which of the files any layout knows are in the drop (existence checks, any filesystem)."""
    names = sorted({m for lay in LAYOUTS.values() for m in lay.markers})
    return [n for n in names if fs.exists(spark, f"{raw_dir.rstrip('/')}/{n}")]


def read_drop(
    spark: SparkSession,
    raw_dir: str,
    encoding: str | list[str] | None = None,
    layout: str = "auto",
) -> tuple[Layout, dict[str, SourceFrame | None]]:
    """Detect the drop's layout and open each of its files: {table key: frame or None}."""
    lay = detect_layout(_present_files(spark, raw_dir), layout)
    explicit = parse_encodings(encoding, lay)
    encodings = encoding_map(explicit, lay)
    frames: dict[str, SourceFrame | None] = {spec.key: None for spec in schemas.ALL_FILES}
    for source in lay.sources:
        frames[source.spec.key] = read_source(
            spark, raw_dir, source, encodings[source.filename], source.filename in explicit
        )
    return lay, frames


def run_ingest(
    spark: SparkSession,
    raw_dir: str,
    warehouse: Warehouse,
    ds: str,
    max_reject_share: float = 0.01,
    encoding: str | list[str] | None = None,
    layout: str = "auto",
) -> IngestSummary:
    """Validate the drop in ``raw_dir`` and publish ``snapshot/ds=…`` (and quarantine).

    ``encoding``: ``--encoding`` values (``ENC`` for every file, ``FILE=ENC`` for one);
    ``layout``: ``auto`` (detected from the files present) or a name in ``layouts.LAYOUTS``.
    """
    if not 0.0 <= max_reject_share <= 1.0:
        raise ConfigError(f"--max-reject-share must be within [0, 1], got {max_reject_share}")
    as_of_cutoff(ds)  # a bad --ds is named before any file is read
    lay, frames = read_drop(spark, raw_dir, encoding, layout)
    if frames["genome_scores"] is not None and frames["genome_tags"] is None:
        raise InputError("genome-scores.csv is present but genome-tags.csv is missing")
    run = _Run(spark, raw_dir, warehouse, ds, frames)
    try:
        summary = _ingest(run, lay, max_reject_share)
    finally:
        fs.delete(spark, run.work)
        fs.delete(spark, run.snapshot_staging)
    return summary


def _ingest(run: _Run, lay: Layout, max_reject_share: float) -> IngestSummary:
    frames = run.frames
    movies = run.checked(schemas.MOVIES, row_rules.movies(frames["movies"]))
    valid_movies = run.valid(movies)
    movie_ids = valid_movies.select("movieId")

    ratings = run.checked(schemas.RATINGS, row_rules.ratings(frames["ratings"], movie_ids))
    run.keep("ratings", row_rules.latest_per_pair(_as_of(run, run.valid(ratings))))
    run.keep("movies", valid_movies.orderBy("movieId"))

    if frames["genome_tags"] is not None:
        gtags = run.checked(schemas.GENOME_TAGS, row_rules.genome_tags(frames["genome_tags"]))
        valid_tags = run.valid(gtags)
        run.keep("genome_tags", valid_tags.orderBy("tagId"))
        if frames["genome_scores"] is not None:
            scores = run.checked(
                schemas.GENOME_SCORES, row_rules.genome_scores(frames["genome_scores"], movie_ids, valid_tags.select("tagId"))
            )
            genome = run.valid(scores).withColumn("relevance", F.col("relevance").cast("float"))
            run.keep("genome", genome)
    if frames["tags"] is not None:
        tags = run.checked(schemas.TAGS, row_rules.tags(frames["tags"], movie_ids))
        run.keep("tags", _as_of(run, run.valid(tags)))
    if frames["links"] is not None:
        links = run.checked(schemas.LINKS, row_rules.links(frames["links"], movie_ids))
        run.keep("links", run.valid(links))

    _write_quarantine(run)
    _check_reject_shares(run, max_reject_share)

    kept = run.spark.read.parquet(f"{run.snapshot_staging}/ratings")
    stats = kept.agg(
        F.count("*").alias("n"),
        F.countDistinct("userId").alias("users"),
        F.countDistinct("movieId").alias("films"),
        F.min("timestamp").alias("first"),
        F.max("timestamp").alias("last"),
    ).first()
    rr = run.reports["ratings"]
    rr.kept = int(stats["n"])
    rr.duplicates = rr.rows_read - rr.rejected - rr.after_ds - rr.kept
    for key in ("movies", "genome_tags", "genome_scores", "tags", "links"):
        if key in run.reports:
            table = "genome" if key == "genome_scores" else key
            run.reports[key].kept = run.spark.read.parquet(f"{run.snapshot_staging}/{table}").count()
    if rr.kept == 0:
        raise InputError(f"{rr.file}: no valid rating before the end of {run.ds} (as-of cut)")
    specs = {spec.key: spec for spec in schemas.ALL_FILES}
    summary = IngestSummary(
        ds=run.ds,
        cutoff_epoch=run.cutoff,
        layout=lay.name,
        files={specs[key].filename: r for key, r in run.reports.items()},
        users=int(stats["users"]),
        rated_films=int(stats["films"]),
        first_rating=_iso(stats["first"]),
        last_rating=_iso(stats["last"]),
    )
    fs.write_text(run.spark, f"{run.snapshot_staging}/manifest.json", summary.to_json())
    fs.swap_in(run.spark, run.snapshot_staging, run.snapshot_final)
    return summary


def _write_quarantine(run: _Run) -> None:
    """All rejected rows of this run, replacing the last: ``file``, ``line`` (1-based, in
    that file), ``reason``, ``record`` (the fields as JSON) and ``raw`` (the line as read)."""
    parts = [
        df.filter(F.col(REASON).isNotNull()).select(
            F.lit(run.reports[key].file).alias("file"),
            (run.line_number(key) if run.reports[key].rejected else F.lit(None)).cast("long").alias("line"),
            F.col(REASON),
            F.col(RECORD),
            F.col(RAW_LINE),
        )
        for key, df in run.checked_frames.items()
    ]
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    staging = staging_path(run.quarantine_final)
    union.orderBy("file", "line", REASON).write.mode("overwrite").parquet(staging)
    fs.swap_in(run.spark, staging, run.quarantine_final)


def _check_reject_shares(run: _Run, max_share: float) -> None:
    over = [r for r in run.reports.values() if r.rows_read and r.reject_share > max_share]
    if over:
        detail = "; ".join(
            f"{r.file}: {r.rejected:,} of {r.rows_read:,} rows rejected ({r.reject_share:.2%}; "
            + ", ".join(f"{k}={v:,}" for k, v in sorted(r.rejected_by_reason.items()))
            + ")"
            + (f", the first at line {min(r.first_bad_line.values()):,}" if r.first_bad_line else "")
            for r in over
        )
        raise InputError(
            f"reject share above --max-reject-share={max_share:.2%}: {detail}. "
            f"The rejected rows are in {run.quarantine_final}; nothing was published."
        )
