"""File operations on any Hadoop filesystem (local, HDFS, S3A) through Spark's JVM.

The jobs use these instead of ``os``/``shutil`` so the same code runs against a cluster
with paths given as URIs.

Why a second directory swap beside ``recsys_core.fs_swap`` (pyarrow): a Spark job must go
through the JVM's Hadoop FileSystem, which carries the cluster's filesystem settings and
credentials (HDFS, S3A) that pyarrow in the driver does not see; the torch and publish
side has no JVM. The two follow the same protocol (``paths.staging_path`` siblings, one
rename in).
"""

from __future__ import annotations

from pyspark.sql import SparkSession

from recsys_core.paths import staging_path


def _fs_path(spark: SparkSession, path: str):
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hpath


def exists(spark: SparkSession, path: str) -> bool:
    fs, p = _fs_path(spark, path)
    return bool(fs.exists(p))


def size(spark: SparkSession, path: str) -> int:
    fs, p = _fs_path(spark, path)
    return int(fs.getFileStatus(p).getLen())


def delete(spark: SparkSession, path: str) -> None:
    fs, p = _fs_path(spark, path)
    if fs.exists(p):
        fs.delete(p, True)


def write_text(spark: SparkSession, path: str, text: str) -> None:
    fs, p = _fs_path(spark, path)
    out = fs.create(p, True)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()


def read_text(spark: SparkSession, path: str) -> str:
    return "\n".join(r.value for r in spark.read.text(path, wholetext=True).collect())


def recover(spark: SparkSession, final: str, keep: str | None = None) -> list[str]:
    """Undo what an interrupted job left beside ``final``; return the paths removed.

    The same rule as ``recsys_core.fs_swap.recover``: when ``final`` is missing and the old
    copy a killed swap moved aside (``.staging-<name>-…-old``) exists, it is renamed back;
    every other hidden ``.staging-<name>-*`` sibling but ``keep`` (the caller's own staging
    directory) is deleted. Callers hold the warehouse lock, so no leftover is a live writer's.
    """
    fs, final_p = _fs_path(spark, final)
    parent, name = final.rstrip("/").rsplit("/", 1)
    jvm = spark.sparkContext._jvm
    parent_p = jvm.org.apache.hadoop.fs.Path(parent)
    if not fs.exists(parent_p):
        return []
    keep_name = keep.rstrip("/").rsplit("/", 1)[-1] if keep else None
    leftovers = sorted(
        (status for status in fs.listStatus(parent_p)
         if status.getPath().getName().startswith(f".staging-{name}-") and status.getPath().getName() != keep_name),
        key=lambda status: status.getModificationTime(),
    )  # fmt: skip
    if not fs.exists(final_p):
        orphans = [st for st in leftovers if st.getPath().getName().endswith("-old") and st.isDirectory()]
        if orphans and fs.rename(orphans[-1].getPath(), final_p):
            leftovers.remove(orphans[-1])
    removed = []
    for status in leftovers:
        fs.delete(status.getPath(), True)
        removed.append(str(status.getPath()))
    return removed


def swap_in(spark: SparkSession, staging: str, final: str) -> None:
    """Replace ``final`` by the fully written ``staging`` directory.

    The old directory is renamed aside first and deleted only after the new one is in
    place, so a failure before the second rename leaves the old one recoverable; what a
    killed earlier run left beside ``final`` is recovered or removed first (``recover``).
    """
    recover(spark, final, keep=staging)
    fs, final_p = _fs_path(spark, final)
    _, staging_p = _fs_path(spark, staging)
    jvm = spark.sparkContext._jvm
    old_p = None
    if fs.exists(final_p):
        old_p = jvm.org.apache.hadoop.fs.Path(staging_path(final) + "-old")
        if not fs.rename(final_p, old_p):
            raise OSError(f"could not move {final} aside")
    fs.mkdirs(final_p.getParent())
    if not fs.rename(staging_p, final_p):
        if old_p is not None:
            fs.rename(old_p, final_p)
        raise OSError(f"could not move {staging} to {final}")
    if old_p is not None:
        fs.delete(old_p, True)
