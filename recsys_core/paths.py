"""The warehouse layout: one place that knows where each table of a ``ds`` lives.

Paths are plain strings so that a URI (``hdfs://``, ``s3a://``, ``file:///``) works as well
as a local directory; a local path is made absolute so Spark and Python agree on it.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

from recsys_core.dates import parse_ds


def normalize_root(root: str) -> str:
    if "://" in root or root.startswith("file:"):
        return root.rstrip("/")
    return os.path.abspath(os.path.expanduser(root))


def staging_path(final: str) -> str:
    """A sibling of ``final`` that table readers skip (``.``-prefixed), unique per call."""
    parent, name = final.rstrip("/").rsplit("/", 1)
    return f"{parent}/.staging-{name}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Warehouse:
    root: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", normalize_root(self.root))

    def _part(self, table: str, ds: str) -> str:
        parse_ds(ds)
        return f"{self.root}/{table}/ds={ds}"

    def snapshot(self, ds: str) -> str:
        return self._part("snapshot", ds)

    def quarantine(self, ds: str) -> str:
        return self._part("quarantine", ds)

    def features(self, ds: str) -> str:
        return self._part("features", ds)

    def models(self, ds: str) -> str:
        return self._part("models", ds)

    def embeddings(self, ds: str) -> str:
        return self._part("embeddings", ds)

    def recommendations(self, ds: str) -> str:
        return self._part("recommendations", ds)

    def recommendations_staging(self, ds: str) -> str:
        """Where scoring leaves a partition for publish to check and swap in; ``_`` hides it."""
        return self._part("_staging/recommendations", ds)

    def metrics(self, ds: str) -> str:
        """The run record of ``ds`` (``run.json``: counts, validation metrics, durations)."""
        return self._part("metrics", ds)

    def work(self, job: str, ds: str) -> str:
        """Scratch space of one job run; ``_``-prefixed so table readers skip it."""
        return self._part(f"_work/{job}", ds)
