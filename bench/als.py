"""Spark MLlib ALS on a MovieLens drop: fit + top-N for every user, written to Parquet.

    spark-submit bench/als.py --raw DIR --ds YYYY-MM-DD --out DIR [--rank 64] [--iterations 10]

The comparison ``bench/dag.py --with-als`` times against the nightly chain. From the raw
``ratings.csv`` (the same file ingest reads, the same as-of cut: timestamps before the end
of ``ds``, UTC) to ``recommendForAllUsers(top_n)`` written as Parquet (userId,
recommendations: array of (movieId, rating)). Settings are the project's evaluation
baseline's (``recsys_core.evaluation.baselines.SparkALS``, the implicit grid's point chosen
on ml-latest-small): implicit preferences, rank 64, regParam 0.1, alpha 2.0, 10 iterations,
min(8, cores) user and item blocks; every rating is a preference of 1 (all 27.7M at full
scale, the ratings our chain learns from).
"""

from __future__ import annotations

import argparse
import json
import time

from recsys_core.dates import as_of_cutoff
from recsys_core.spark.session import get_spark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--raw", required=True, help="directory holding ratings.csv")
    parser.add_argument("--ds", required=True, help="YYYY-MM-DD: ratings before its end (UTC)")
    parser.add_argument("--out", required=True, help="output directory (replaced)")
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--top-n", type=int, default=100)
    args = parser.parse_args()

    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    spark = get_spark(f"als ds={args.ds}")
    start = time.monotonic()
    schema = "userId INT, movieId INT, rating FLOAT, timestamp LONG"
    ratings = (
        spark.read.csv(f"{args.raw}/ratings.csv", header=True, schema=schema)
        .where(F.col("timestamp") < as_of_cutoff(args.ds))
        .select("userId", "movieId", F.lit(1.0).cast("float").alias("preference"))
    )
    blocks = max(1, min(8, spark.sparkContext.defaultParallelism))  # as SparkALS
    als = ALS(rank=args.rank, maxIter=args.iterations, regParam=0.1, alpha=2.0, implicitPrefs=True, seed=42,
              numUserBlocks=blocks, numItemBlocks=blocks, userCol="userId", itemCol="movieId",
              ratingCol="preference")  # fmt: skip
    model = als.fit(ratings)
    fitted = time.monotonic()
    top = model.recommendForAllUsers(args.top_n)
    top.write.mode("overwrite").parquet(f"{args.out}/recommendations")
    done = time.monotonic()
    users = spark.read.parquet(f"{args.out}/recommendations").count()
    summary = {"fit_s": round(fitted - start, 1), "recommend_s": round(done - fitted, 1), "users": users,
               "rank": args.rank, "iterations": args.iterations, "top_n": args.top_n}  # fmt: skip
    print(json.dumps(summary))
    spark.stop()


if __name__ == "__main__":
    main()
