"""What makes a row of each MovieLens file valid: the per-file rules of ingest.

Each function tags the rows of one file (``reason`` null = valid; the first failing rule
names the reason) after the structural checks of ``recsys_core.spark.read``; ids are checked
against the films and genome tags that passed (``known``, a broadcast join).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recsys_core.data import schemas
from recsys_core.spark.read import SourceFrame
from recsys_core.spark.validate import (
    BLOCK,
    POS,
    positive_id_rules,
    raw,
    row_reason,
    tag_rejects,
    with_typed,
)


def reject_duplicate_ids(frame: SourceFrame, key: str) -> DataFrame:
    """Tag rows; of the valid rows sharing ``key``, keep the first in file order, reject the rest.

    (``_block``, ``_pos``) = (offset of the file split, line within it) is the file's order.
    """
    spec = frame.source.spec
    rules = positive_id_rules(key)
    typed = with_typed(frame.df, spec)
    order = Window.partitionBy(key).orderBy(row_reason(spec, rules).isNotNull(), BLOCK, POS)
    typed = typed.withColumn("_n", F.row_number().over(order))
    return tag_rejects(typed, spec, rules + [(F.col("_n") > 1, f"duplicate:{key}")], drop=["_n"])


def movies(frame: SourceFrame) -> DataFrame:
    return reject_duplicate_ids(frame, "movieId")


def genome_tags(frame: SourceFrame) -> DataFrame:
    return reject_duplicate_ids(frame, "tagId")


def known(df: DataFrame, ids: DataFrame, key: str, flag: str) -> DataFrame:
    """Left-join a small id table (broadcast) and add a boolean ``flag``: id is known."""
    lookup = ids.select(F.col(key).alias(f"_{flag}_id")).withColumn(flag, F.lit(True))
    return df.join(F.broadcast(lookup), df[key] == F.col(f"_{flag}_id"), "left").drop(f"_{flag}_id")


def ratings(frame: SourceFrame, movie_ids: DataFrame) -> DataFrame:
    spec = schemas.RATINGS
    r = F.col("rating")
    rules = positive_id_rules("userId", "movieId") + [
        (F.isnan(r), "rating_nan"),
        ((r < schemas.MIN_RATING) | (r > schemas.MAX_RATING), "rating_out_of_range"),
        (r * 2 != F.floor(r * 2), "rating_off_half_star_grid"),
        (F.col("timestamp") < 0, "negative_timestamp"),
        (F.col("_movie_known").isNull(), "unknown_movie"),
    ]
    typed = known(with_typed(frame.df, spec), movie_ids, "movieId", "_movie_known")
    return tag_rejects(typed, spec, rules, drop=["_movie_known"])


def genome_scores(frame: SourceFrame, movie_ids: DataFrame, tag_ids: DataFrame) -> DataFrame:
    spec = schemas.GENOME_SCORES
    rel = F.col("relevance")
    rules = positive_id_rules("movieId", "tagId") + [
        (F.isnan(rel), "relevance_nan"),
        ((rel < 0) | (rel > 1), "relevance_out_of_range"),
        (F.col("_movie_known").isNull(), "unknown_movie"),
        (F.col("_tag_known").isNull(), "unknown_tag"),
    ]
    typed = known(with_typed(frame.df, spec), movie_ids, "movieId", "_movie_known")
    typed = known(typed, tag_ids, "tagId", "_tag_known")
    return tag_rejects(typed, spec, rules, drop=["_movie_known", "_tag_known"])


def tags(frame: SourceFrame, movie_ids: DataFrame) -> DataFrame:
    spec = schemas.TAGS
    rules = positive_id_rules("userId", "movieId") + [
        (F.col("timestamp") < 0, "negative_timestamp"),
        (F.col("_movie_known").isNull(), "unknown_movie"),
    ]
    typed = known(with_typed(frame.df, spec), movie_ids, "movieId", "_movie_known")
    return tag_rejects(typed, spec, rules, drop=["_movie_known"])


def links(frame: SourceFrame, movie_ids: DataFrame) -> DataFrame:
    spec = schemas.LINKS
    rules = positive_id_rules("movieId") + [
        (~raw("imdbId").rlike(r"^[0-9]+$"), "unparsable:imdbId"),
        (F.col("_movie_known").isNull(), "unknown_movie"),
    ]
    typed = known(with_typed(frame.df, spec), movie_ids, "movieId", "_movie_known")
    return tag_rejects(typed, spec, rules, drop=["_movie_known"])


def latest_per_pair(ratings: DataFrame) -> DataFrame:
    """One rating per (userId, movieId): the latest; on equal timestamps, the higher rating.

    Hash-partitioning by userId first satisfies the grouping by (userId, movieId), so the
    ratings are shuffled once and the snapshot comes out clustered by user.
    """
    latest = F.max(F.struct(F.col("timestamp"), F.col("rating"))).alias("last")
    return ratings.repartition("userId").groupBy("userId", "movieId").agg(latest).select(
        "userId", "movieId", F.col("last.rating").alias("rating"), F.col("last.timestamp").alias("timestamp")
    )
