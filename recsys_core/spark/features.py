"""Features: ``snapshot/ds=…`` -> ``features/ds=…/{films,users}`` + ``manifest.json``.

- ``films``: the film vocabulary (films with at least ``min_film_ratings`` ratings in the
  snapshot), indexed densely by ascending movieId; title, year parsed from the title,
  genre multi-hot over the sorted genre names found in the data, genome relevance
  ordered by tagId (null unless the film has a complete genome), n_ratings, mean_rating.
- ``users``: every user of the snapshot, indexed densely by ascending userId, with the
  ratings of vocabulary films as aligned lists sorted by film_idx (``film_idx``,
  ``rating``, ``timestamp``) so that torch can build CSR arrays without a shuffle. A user
  whose films all fall outside the vocabulary keeps a row with empty lists.
"""

from __future__ import annotations

import json
import logging

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType

from recsys_core import defaults
from recsys_core.data.schemas import NO_GENRES
from recsys_core.data.vocab import vocabulary_hashes
from recsys_core.errors import ConfigError, InputError
from recsys_core.paths import Warehouse, staging_path
from recsys_core.spark import fs

log = logging.getLogger(__name__)

YEAR_PATTERN = r"\((\d{4})(?:[-\x{2013}]\d{0,4})?\)\s*$"


def dense_index(df: DataFrame, key: str, name: str) -> DataFrame:
    """Add ``name`` = 0..n-1 in ascending ``key`` order (deterministic for the same rows).

    The window has no partition, so Spark ranks in one task: fine for vocabularies
    (films, users), never used on rating-sized data.
    """
    return df.withColumn(name, (F.row_number().over(Window.orderBy(key)) - 1).cast("int"))


def film_vocabulary(ratings: DataFrame, movies: DataFrame, min_film_ratings: int) -> DataFrame:
    stats = ratings.groupBy("movieId").agg(
        F.count("*").cast("int").alias("n_ratings"), F.avg("rating").cast("float").alias("mean_rating")
    )
    vocab = stats.filter(F.col("n_ratings") >= min_film_ratings).join(movies, "movieId")
    return dense_index(vocab, "movieId", "film_idx")


def genre_vocabulary(films: DataFrame) -> list[str]:
    names = films.select(F.explode(F.split("genres", r"\|")).alias("g")).distinct().collect()
    return sorted(r["g"] for r in names if r["g"] and r["g"] != NO_GENRES)


def with_content(films: DataFrame, genres: list[str]) -> DataFrame:
    year = F.regexp_extract("title", YEAR_PATTERN, 1)
    parts = F.split("genres", r"\|")
    multi_hot = F.array(*[F.array_contains(parts, g).cast("float") for g in genres])
    if not genres:
        multi_hot = F.array().cast(ArrayType(FloatType()))
    return films.withColumn("year", F.when(year != "", year.cast("int"))).withColumn("genre_vec", multi_hot)


def genome_vectors(genome: DataFrame, film_ids: DataFrame, n_tags: int) -> DataFrame:
    """(movieId, genome, complete) for vocabulary films that have genome rows.

    ``genome`` is the relevance list ordered by tagId when the film has exactly one value
    for each of the ``n_tags`` tags, else null (``complete`` false).
    """
    rows = genome.join(F.broadcast(film_ids), "movieId")
    grouped = rows.groupBy("movieId").agg(
        F.array_sort(F.collect_list(F.struct("tagId", "relevance"))).alias("pairs")
    )
    complete = (F.size("pairs") == n_tags) & (
        F.size(F.array_distinct(F.transform("pairs", lambda p: p["tagId"]))) == n_tags
    )
    values = F.transform("pairs", lambda p: p["relevance"].cast("float"))
    return grouped.select("movieId", F.when(complete, values).alias("genome"), complete.alias("complete"))


RATINGS_PER_USER_FILE = 2_000_000


def user_vectors(ratings: DataFrame, films: DataFrame, n_ratings: int) -> DataFrame:
    """Every snapshot user with aligned (film_idx, rating, timestamp) lists over the vocabulary.

    One shuffle does it all: the dense user index is computed on the user ids alone and
    broadcast onto the ratings, which are then range-partitioned by ``user_idx``, so the
    grouping needs no other exchange and each output file holds a contiguous, sorted run
    of users.
    """
    index = dense_index(ratings.select(F.col("userId").alias("user_id")).distinct(), "user_id", "user_idx")
    vocab = films.select(F.col("movie_id").alias("movieId"), "film_idx")
    rated = ratings.join(F.broadcast(vocab), "movieId", "left").join(
        F.broadcast(index), ratings["userId"] == index["user_id"]
    )
    entry = F.when(F.col("film_idx").isNotNull(), F.struct("film_idx", "rating", "timestamp"))
    max_partitions = int(ratings.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    partitions = max(1, min(max_partitions, -(-n_ratings // RATINGS_PER_USER_FILE)))
    lists = (
        rated.repartitionByRange(partitions, "user_idx")
        .groupBy("user_idx", "user_id")
        .agg(F.array_sort(F.collect_list(entry)).alias("r"))  # collect_list skips the nulls
        .sortWithinPartitions("user_idx")
    )
    return lists.select(
        "user_idx",
        F.col("user_id").cast("int"),
        F.transform("r", lambda x: x["film_idx"]).alias("film_idx"),
        F.transform("r", lambda x: x["rating"].cast("float")).alias("rating"),
        F.transform("r", lambda x: x["timestamp"].cast("long")).alias("timestamp"),
    )


def run_features(spark: SparkSession, warehouse: Warehouse, ds: str,
                 min_film_ratings: int = defaults.MIN_FILM_RATINGS) -> dict:  # fmt: skip
    """Build and publish ``features/ds=…``; returns the manifest."""
    if min_film_ratings < 1:
        raise ConfigError(f"--min-film-ratings must be >= 1, got {min_film_ratings}")
    snap = warehouse.snapshot(ds)
    if not fs.exists(spark, f"{snap}/manifest.json"):
        raise InputError(f"no snapshot for ds={ds} at {snap}: run ingest for that date first")
    snapshot_manifest = json.loads(fs.read_text(spark, f"{snap}/manifest.json"))
    ratings = spark.read.parquet(f"{snap}/ratings")
    movies = spark.read.parquet(f"{snap}/movies")

    vocabulary = film_vocabulary(ratings, movies, min_film_ratings).cache()
    genres = genre_vocabulary(vocabulary)
    films = with_content(vocabulary, genres)

    has_genome = fs.exists(spark, f"{snap}/genome") and fs.exists(spark, f"{snap}/genome_tags")
    tag_ids: list[int] = []
    if has_genome:
        tags = spark.read.parquet(f"{snap}/genome_tags").select("tagId").orderBy("tagId").collect()
        tag_ids = [r["tagId"] for r in tags]
    if tag_ids:
        vectors = genome_vectors(spark.read.parquet(f"{snap}/genome"), films.select("movieId"), len(tag_ids))
        films = films.join(vectors, "movieId", "left")
    else:
        films = films.withColumn("genome", F.lit(None).cast(ArrayType(FloatType()))).withColumn(
            "complete", F.lit(None).cast("boolean")
        )
    films_out = films.select(
        "film_idx",
        F.col("movieId").cast("int").alias("movie_id"),
        "title",
        "year",
        F.col("genre_vec").alias("genres"),
        "genome",
        "n_ratings",
        "mean_rating",
        F.col("complete").alias("_genome_complete"),
    ).orderBy("film_idx")

    final = warehouse.features(ds)
    staging = staging_path(final)
    try:
        films_out.drop("_genome_complete").coalesce(1).write.mode("overwrite").parquet(f"{staging}/films")
        written_films = spark.read.parquet(f"{staging}/films")
        n_ratings = snapshot_manifest["files"]["ratings.csv"]["kept"]
        users = user_vectors(ratings, written_films, n_ratings)
        users.write.mode("overwrite").parquet(f"{staging}/users")
        manifest = _manifest(spark, staging, ds, min_film_ratings, genres, tag_ids, films_out)
        fs.write_text(spark, f"{staging}/manifest.json", json.dumps(manifest, indent=2, sort_keys=True))
        fs.swap_in(spark, staging, final)
    finally:
        fs.delete(spark, staging)
        vocabulary.unpersist()
    return manifest


def _manifest(
    spark: SparkSession,
    staging: str,
    ds: str,
    min_film_ratings: int,
    genres: list[str],
    tag_ids: list[int],
    films_out: DataFrame,
) -> dict:
    films = spark.read.parquet(f"{staging}/films")
    users = spark.read.parquet(f"{staging}/users")
    film_ids = films.orderBy("film_idx").select("movie_id").toPandas()["movie_id"].to_numpy()
    user_ids = users.orderBy("user_idx").select("user_id").toPandas()["user_id"].to_numpy()
    ustats = users.agg(
        F.sum(F.size("film_idx")).alias("ratings"),
        F.sum(F.when(F.size("film_idx") == 0, 1).otherwise(0)).alias("empty"),
    ).first()
    incomplete = films_out.filter(F.col("_genome_complete") == F.lit(False)).count()
    with_genome = films.filter(F.col("genome").isNotNull()).count()
    if len(film_ids) == 0:
        raise InputError(f"no film has >= {min_film_ratings} ratings in the snapshot for ds={ds}")
    return {
        "ds": ds,
        "params": {"min_film_ratings": min_film_ratings},
        "counts": {
            "films": len(film_ids),
            "users": len(user_ids),
            "users_without_vocabulary_ratings": int(ustats["empty"] or 0),
            "ratings": int(ustats["ratings"] or 0),
            "films_with_genome": int(with_genome),
            "films_with_incomplete_genome": int(incomplete),
        },
        "genres": genres,
        "genome_tag_ids": tag_ids,
        "hashes": vocabulary_hashes(film_ids, user_ids, genres, tag_ids),
    }
