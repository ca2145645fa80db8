"""Vocabulary fingerprints shared by the Spark prep jobs and the torch side.

A fingerprint is computed from the ids in index order, so two vocabularies match only if
they hold the same ids at the same indices: a model trained on one cannot be applied to
features built with another without a loud error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

from recsys_core.errors import InputError


def ids_hash(ids_in_index_order: Sequence[int] | np.ndarray) -> str:
    """sha256 (first 16 hex digits) of the ids as little-endian int64, in index order."""
    arr = np.ascontiguousarray(np.asarray(ids_in_index_order, dtype="<i8"))
    return hashlib.sha256(arr.tobytes()).hexdigest()[:16]


def names_hash(names_in_order: Iterable[str]) -> str:
    """sha256 (first 16 hex digits) of the names joined by newlines, in order."""
    joined = "\n".join(names_in_order).encode("utf-8")
    return hashlib.sha256(joined).hexdigest()[:16]


def vocabulary_hashes(film_ids: Sequence[int] | np.ndarray, user_ids: Sequence[int] | np.ndarray,
                      genres: Iterable[str], tag_ids: Sequence[int] | np.ndarray) -> dict[str, str]:  # fmt: skip
    """The features manifest's ``hashes``: each vocabulary in index order, as models record it."""
    return {"films": ids_hash(film_ids), "users": ids_hash(user_ids), "genres": names_hash(genres),
            "genome_tags": ids_hash(tag_ids)}  # fmt: skip


class VocabularyMismatch(InputError):
    """Raised when a model's vocabulary does not match the features it is applied to."""
