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

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recsys_core.data import schemas as S
from recsys_core.dates import as_of_cutoff
from recsys_core.errors import ConfigError, InputError
from recsys_core.paths import Warehouse, staging_path
from recsys_core.spark import fs
from recsys_core.spark.validate import (
    REASON,
    RECORD,
    positive_id_rules,
    raw,
    read_csv,
    tag_rejects,
    with_typed,
)

log = logging.getLogger(__name__)


@dataclass
class FileReport:
    file: str
    rows_read: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    after_ds: int = 0
    duplicates: int = 0
    kept: int = 0

    @property
    def reject_share(self) -> float:
        return self.rejected / self.rows_read if self.rows_read else 0.0


@dataclass
class IngestSummary:
    ds: str
    cutoff_epoch: int
    files: dict[str, FileReport]
    users: int
    rated_films: int
    first_rating: str | None
    last_rating: str | None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def render(self) -> str:
        lines = [f"ingest ds={self.ds} (ratings before {_iso(self.cutoff_epoch)})"]
        for r in self.files.values():
            reasons = ", ".join(f"{k}={v:,}" for k, v in sorted(r.rejected_by_reason.items()))
            lines.append(
                f"  {r.file:<18} read {r.rows_read:>12,}  kept {r.kept:>12,}  "
                f"rejected {r.rejected:>9,} ({r.reject_share:.3%})"
                + (f"  after ds {r.after_ds:,}" if r.after_ds else "")
                + (f"  duplicates {r.duplicates:,}" if r.duplicates else "")
                + (f"  [{reasons}]" if reasons else "")
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


def _reject_duplicate_ids(df: DataFrame, spec: S.FileSpec, key: str) -> DataFrame:
    """Tag rows; of the valid rows sharing ``key``, keep the first in file order, reject the rest.

    ``monotonically_increasing_id`` grows with the position in the file (partition index
    in the high bits, row within the split in the low bits), so "first" is the file's.
    """
    rules = positive_id_rules(key)
    tagged = tag_rejects(with_typed(df.withColumn("_row", F.monotonically_increasing_id()), spec), spec, rules)
    order = Window.partitionBy(key).orderBy(F.col(REASON).asc_nulls_first(), "_row")
    tagged = tagged.withColumn("_n", F.row_number().over(order))
    dup = F.col(REASON).isNull() & (F.col("_n") > 1)
    record = F.to_json(F.struct(*spec.column_names))
    return (
        tagged.withColumn(RECORD, F.when(dup, record).otherwise(F.col(RECORD)))
        .withColumn(REASON, F.when(dup, F.lit(f"duplicate:{key}")).otherwise(F.col(REASON)))
        .drop("_n", "_row")
    )


def _movies(df: DataFrame) -> DataFrame:
    return _reject_duplicate_ids(df, S.MOVIES, "movieId")


def _genome_tags(df: DataFrame) -> DataFrame:
    return _reject_duplicate_ids(df, S.GENOME_TAGS, "tagId")


def _known(df: DataFrame, ids: DataFrame, key: str, flag: str) -> DataFrame:
    """Left-join a small id table (broadcast) and add a boolean ``flag``: id is known."""
    lookup = ids.select(F.col(key).alias(f"_{flag}_id")).withColumn(flag, F.lit(True))
    return df.join(F.broadcast(lookup), df[key] == F.col(f"_{flag}_id"), "left").drop(f"_{flag}_id")


def _ratings(df: DataFrame, movie_ids: DataFrame) -> DataFrame:
    spec = S.RATINGS
    r = F.col("rating")
    rules = positive_id_rules("userId", "movieId") + [
        (F.isnan(r), "rating_nan"),
        ((r < S.MIN_RATING) | (r > S.MAX_RATING), "rating_out_of_range"),
        (r * 2 != F.floor(r * 2), "rating_off_half_star_grid"),
        (F.col("timestamp") < 0, "negative_timestamp"),
        (F.col("_movie_known").isNull(), "unknown_movie"),
    ]
    typed = _known(with_typed(df, spec), movie_ids, "movieId", "_movie_known")
    return tag_rejects(typed, spec, rules, drop=["_movie_known"])


def _genome_scores(df: DataFrame, movie_ids: DataFrame, tag_ids: DataFrame) -> DataFrame:
    spec = S.GENOME_SCORES
    rel = F.col("relevance")
    rules = positive_id_rules("movieId", "tagId") + [
        (F.isnan(rel), "relevance_nan"),
        ((rel < 0) | (rel > 1), "relevance_out_of_range"),
        (F.col("_movie_known").isNull(), "unknown_movie"),
        (F.col("_tag_known").isNull(), "unknown_tag"),
    ]
    typed = _known(with_typed(df, spec), movie_ids, "movieId", "_movie_known")
    typed = _known(typed, tag_ids, "tagId", "_tag_known")
    return tag_rejects(typed, spec, rules, drop=["_movie_known", "_tag_known"])


def _tags(df: DataFrame, movie_ids: DataFrame) -> DataFrame:
    spec = S.TAGS
    rules = positive_id_rules("userId", "movieId") + [
        (F.col("timestamp") < 0, "negative_timestamp"),
        (F.col("_movie_known").isNull(), "unknown_movie"),
    ]
    typed = _known(with_typed(df, spec), movie_ids, "movieId", "_movie_known")
    return tag_rejects(typed, spec, rules, drop=["_movie_known"])


def _links(df: DataFrame, movie_ids: DataFrame) -> DataFrame:
    spec = S.LINKS
    rules = positive_id_rules("movieId") + [
        (~raw("imdbId").rlike(r"^[0-9]+$"), "unparsable:imdbId"),
        (F.col("_movie_known").isNull(), "unknown_movie"),
    ]
    typed = _known(with_typed(df, spec), movie_ids, "movieId", "_movie_known")
    return tag_rejects(typed, spec, rules, drop=["_movie_known"])


class _Run:
    """State of one ingest run: where things go and what was counted."""

    def __init__(self, spark: SparkSession, raw_dir: str, warehouse: Warehouse, ds: str):
        self.spark = spark
        self.raw_dir = raw_dir
        self.ds = ds
        self.cutoff = as_of_cutoff(ds)
        self.work = warehouse.work("ingest", ds)
        self.snapshot_final = warehouse.snapshot(ds)
        self.snapshot_staging = staging_path(self.snapshot_final)
        self.quarantine_final = warehouse.quarantine(ds)
        self.reports: dict[str, FileReport] = {}

    def checked(self, spec: S.FileSpec, tagged: DataFrame) -> DataFrame:
        """Write the tagged rows once to scratch parquet; count them by reason and as-of.

        For files with a timestamp, the same pass counts the valid rows after ``ds``.
        """
        path = f"{self.work}/{spec.key}"
        tagged.write.mode("overwrite").parquet(path)
        checked = self.spark.read.parquet(path)
        late = F.lit(False)
        if "timestamp" in spec.column_names:
            late = F.col(REASON).isNull() & (F.col("timestamp") >= self.cutoff)
        rows = checked.groupBy(REASON).agg(F.count("*").alias("n"), F.sum(late.cast("long")).alias("late")).collect()
        report = FileReport(file=spec.filename, rows_read=sum(r["n"] for r in rows))
        report.rejected_by_reason = {r[REASON]: r["n"] for r in rows if r[REASON] is not None}
        report.rejected = sum(report.rejected_by_reason.values())
        report.after_ds = sum(r["late"] or 0 for r in rows)
        self.reports[spec.key] = report
        log.info("%s: %s rows read, %s rejected", spec.filename, f"{report.rows_read:,}", f"{report.rejected:,}")
        return checked

    def valid(self, checked: DataFrame) -> DataFrame:
        return checked.filter(F.col(REASON).isNull()).drop(REASON, RECORD)

    def keep(self, key: str, df: DataFrame) -> None:
        df.write.mode("overwrite").parquet(f"{self.snapshot_staging}/{key}")


def _as_of(run: _Run, valid: DataFrame) -> DataFrame:
    return valid.filter(F.col("timestamp") < run.cutoff)


def _latest_per_pair(ratings: DataFrame) -> DataFrame:
    """One rating per (userId, movieId): the latest; on equal timestamps, the higher rating.

    Hash-partitioning by userId first satisfies the grouping by (userId, movieId), so the
    ratings are shuffled once and the snapshot comes out clustered by user.
    """
    latest = F.max(F.struct(F.col("timestamp"), F.col("rating"))).alias("last")
    return ratings.repartition("userId").groupBy("userId", "movieId").agg(latest).select(
        "userId", "movieId", F.col("last.rating").alias("rating"), F.col("last.timestamp").alias("timestamp")
    )


def run_ingest(
    spark: SparkSession,
    raw_dir: str,
    warehouse: Warehouse,
    ds: str,
    max_reject_share: float = 0.01,
) -> IngestSummary:
    """Validate the drop in ``raw_dir`` and publish ``snapshot/ds=…`` (and quarantine)."""
    if not 0.0 <= max_reject_share <= 1.0:
        raise ConfigError(f"--max-reject-share must be within [0, 1], got {max_reject_share}")
    run = _Run(spark, raw_dir, warehouse, ds)
    frames = {spec.key: read_csv(spark, raw_dir, spec) for spec in S.ALL_FILES}
    if frames["genome_scores"] is not None and frames["genome_tags"] is None:
        raise InputError("genome-scores.csv is present but genome-tags.csv is missing")
    try:
        summary = _ingest(run, frames, max_reject_share)
    finally:
        fs.delete(spark, run.work)
        fs.delete(spark, run.snapshot_staging)
    return summary


def _ingest(run: _Run, frames: dict[str, DataFrame | None], max_reject_share: float) -> IngestSummary:
    movies = run.checked(S.MOVIES, _movies(frames["movies"]))
    valid_movies = run.valid(movies)
    movie_ids = valid_movies.select("movieId")
    checked = {"movies": movies}

    ratings = run.checked(S.RATINGS, _ratings(frames["ratings"], movie_ids))
    checked["ratings"] = ratings
    run.keep("ratings", _latest_per_pair(_as_of(run, run.valid(ratings))))
    run.keep("movies", valid_movies.orderBy("movieId"))

    if frames["genome_tags"] is not None:
        gtags = run.checked(S.GENOME_TAGS, _genome_tags(frames["genome_tags"]))
        checked["genome_tags"] = gtags
        valid_tags = run.valid(gtags)
        run.keep("genome_tags", valid_tags.orderBy("tagId"))
        if frames["genome_scores"] is not None:
            scores = run.checked(
                S.GENOME_SCORES, _genome_scores(frames["genome_scores"], movie_ids, valid_tags.select("tagId"))
            )
            checked["genome_scores"] = scores
            genome = run.valid(scores).withColumn("relevance", F.col("relevance").cast("float"))
            run.keep("genome", genome)
    if frames["tags"] is not None:
        tags = run.checked(S.TAGS, _tags(frames["tags"], movie_ids))
        checked["tags"] = tags
        run.keep("tags", _as_of(run, run.valid(tags)))
    if frames["links"] is not None:
        links = run.checked(S.LINKS, _links(frames["links"], movie_ids))
        checked["links"] = links
        run.keep("links", run.valid(links))

    _write_quarantine(run, checked)
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
        raise InputError(f"ratings.csv: no valid rating before the end of {run.ds} (as-of cut)")
    summary = IngestSummary(
        ds=run.ds,
        cutoff_epoch=run.cutoff,
        files={r.file: r for r in run.reports.values()},
        users=int(stats["users"]),
        rated_films=int(stats["films"]),
        first_rating=_iso(stats["first"]),
        last_rating=_iso(stats["last"]),
    )
    fs.write_text(run.spark, f"{run.snapshot_staging}/manifest.json", summary.to_json())
    fs.swap_in(run.spark, run.snapshot_staging, run.snapshot_final)
    return summary


def _write_quarantine(run: _Run, checked: dict[str, DataFrame]) -> None:
    """All rejected rows of this run, with file, reason and the raw record, replacing the last."""
    parts = [
        df.filter(F.col(REASON).isNotNull()).select(
            F.lit(run.reports[key].file).alias("file"), F.col(REASON), F.col(RECORD)
        )
        for key, df in checked.items()
    ]
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    staging = staging_path(run.quarantine_final)
    union.orderBy("file", REASON, RECORD).write.mode("overwrite").parquet(staging)
    fs.swap_in(run.spark, staging, run.quarantine_final)


def _check_reject_shares(run: _Run, max_share: float) -> None:
    over = [r for r in run.reports.values() if r.rows_read and r.reject_share > max_share]
    if over:
        detail = "; ".join(
            f"{r.file}: {r.rejected:,} of {r.rows_read:,} rows rejected ({r.reject_share:.2%}; "
            + ", ".join(f"{k}={v:,}" for k, v in sorted(r.rejected_by_reason.items()))
            + ")"
            for r in over
        )
        raise InputError(
            f"reject share above --max-reject-share={max_share:.2%}: {detail}. "
            f"The rejected rows are in {run.quarantine_final}; nothing was published."
        )
