"""The SparkSession for a job: the master comes from spark-submit, never from code."""

from __future__ import annotations

from pyspark.sql import SparkSession

# Dense vocabulary indices rank films/users in one task on purpose (see features.dense_index);
# Spark warns about that with a whole query plan per run, which buries the job's own log.
_QUIET_LOGGERS = ("org.apache.spark.sql.execution.window",)


def get_spark(app_name: str) -> SparkSession:
    """Session with the settings every job relies on (UTC, ANSI SQL, zstd parquet)."""
    spark = (
        SparkSession.builder.appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.ansi.enabled", "true")
        .config("spark.sql.parquet.compression.codec", "zstd")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")  # the job's own progress is logged by Python
    quiet_spark_loggers(spark)
    return spark


def quiet_spark_loggers(spark: SparkSession) -> None:
    jvm = spark.sparkContext._jvm
    error = jvm.org.apache.logging.log4j.Level.ERROR
    for name in _QUIET_LOGGERS:
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(name, error)
