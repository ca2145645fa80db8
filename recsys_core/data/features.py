"""Features parquet -> numpy arrays for training, and the validation split.

``users`` becomes a CSR matrix straight from the Arrow list offsets (no Python loop over
rows); ``films`` becomes dense content matrices (films x tags is small: 58K x 1,128).
Paths may be local directories or URIs pyarrow understands.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys_core.data.csr import RatingsCSR
from recsys_core.errors import InputError
from recsys_core.fs_swap import read_json


@dataclass
class UserFeatures:
    user_ids: np.ndarray  # (n_users,) int64, in user_idx order
    csr: RatingsCSR


@dataclass
class FilmFeatures:
    movie_ids: np.ndarray  # (n_films,) int64, in film_idx order
    genome: np.ndarray  # (n_films, n_tags) float32, zeros where missing
    has_genome: np.ndarray  # (n_films,) bool
    genres: np.ndarray  # (n_films, n_genres) float32
    numeric: np.ndarray  # (n_films, 3) float32 standardized year, log1p(n_ratings), mean_rating

    @property
    def n_films(self) -> int:
        return len(self.movie_ids)


def _list_column(table: pa.Table, name: str) -> tuple[np.ndarray, pa.Array]:
    """(offsets from 0, flat values) of a list column; null lists count as empty."""
    arr = table.column(name).combine_chunks()
    if isinstance(arr, pa.ChunkedArray):  # pyarrow < 16 may keep a chunked array
        arr = pa.concat_arrays(arr.chunks) if arr.num_chunks else pa.array([], arr.type)
    offsets = arr.offsets.to_numpy().astype(np.int64)
    values = arr.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    offsets = offsets - offsets[0]
    if arr.null_count:  # a null list may still cover values in the child array
        lengths = np.diff(offsets)
        valid = ~arr.is_null().to_numpy(zero_copy_only=False)
        if np.any(lengths[~valid]):
            raise InputError(f"list column {name!r} has null lists with values")
    return offsets, values


def load_users(path: str, n_films: int) -> UserFeatures:
    table = pq.read_table(path, columns=["user_idx", "user_id", "film_idx", "rating", "timestamp"])
    idx = table.column("user_idx").to_numpy()
    if not np.array_equal(idx, np.arange(len(idx))):
        table = table.sort_by("user_idx")
        if not np.array_equal(table.column("user_idx").to_numpy(), np.arange(len(idx))):
            raise InputError(f"{path}: user_idx is not a dense 0..n-1 index")
    indptr, films = _list_column(table, "film_idx")
    rating_offsets, ratings = _list_column(table, "rating")
    ts_offsets, timestamps = _list_column(table, "timestamp")
    if not (np.array_equal(indptr, rating_offsets) and np.array_equal(indptr, ts_offsets)):
        raise InputError(f"{path}: film_idx, rating and timestamp lists are not aligned")
    indices = films.to_numpy(zero_copy_only=False).astype(np.int64)
    if len(indices) and (indices.min() < 0 or indices.max() >= n_films):
        raise InputError(f"{path}: film_idx outside the film vocabulary of {n_films} films")
    csr = RatingsCSR(
        indptr=indptr,
        indices=indices,
        ratings=ratings.to_numpy(zero_copy_only=False).astype(np.float32),
        timestamps=timestamps.to_numpy(zero_copy_only=False).astype(np.int64),
        n_films=n_films,
    )
    return UserFeatures(table.column("user_id").to_numpy().astype(np.int64), csr)


def _fixed_matrix(table: pa.Table, name: str, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense (n, width) matrix of a list column whose non-null rows have ``width`` values."""
    n = table.num_rows
    arr = table.column(name).combine_chunks()
    valid = ~arr.is_null().to_numpy(zero_copy_only=False)
    out = np.zeros((n, width), dtype=np.float32)
    if width == 0 or not valid.any():
        return out, valid
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    if np.any(lengths[valid] != width):
        raise InputError(f"films.{name}: expected {width} values per film")
    out[valid] = pc.list_flatten(arr).to_numpy(zero_copy_only=False).reshape(-1, width)
    return out, valid


def standardize(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the finite values; missing (nan) becomes 0 (the mean)."""
    x = x.astype(np.float64)
    finite = np.isfinite(x)
    if not finite.any():
        return np.zeros_like(x, dtype=np.float32)
    mean, std = x[finite].mean(), x[finite].std()
    z = (x - mean) / (std if std > 0 else 1.0)
    return np.where(finite, z, 0.0).astype(np.float32)


def load_films(path: str, n_genres: int, n_tags: int) -> FilmFeatures:
    cols = ["film_idx", "movie_id", "year", "genres", "genome", "n_ratings", "mean_rating"]
    table = pq.read_table(path, columns=cols).sort_by("film_idx")
    if not np.array_equal(table.column("film_idx").to_numpy(), np.arange(table.num_rows)):
        raise InputError(f"{path}: film_idx is not a dense 0..n-1 index")
    genome, has_genome = _fixed_matrix(table, "genome", n_tags)
    genres, _ = _fixed_matrix(table, "genres", n_genres)
    year = table.column("year").to_numpy(zero_copy_only=False).astype(np.float64)
    n_ratings = table.column("n_ratings").to_numpy(zero_copy_only=False).astype(np.float64)
    mean_rating = table.column("mean_rating").to_numpy(zero_copy_only=False).astype(np.float64)
    numeric = np.stack([standardize(year), standardize(np.log1p(n_ratings)), standardize(mean_rating)], axis=1)
    return FilmFeatures(
        movie_ids=table.column("movie_id").to_numpy().astype(np.int64),
        genome=genome,
        has_genome=has_genome if n_tags else np.zeros(table.num_rows, dtype=bool),
        genres=genres,
        numeric=numeric,
    )


@dataclass
class Features:
    manifest: dict
    users: UserFeatures
    films: FilmFeatures


def load_features(features_dir: str) -> Features:
    """Read ``features/ds=…``: manifest, films and users (fails clearly when absent)."""
    try:
        manifest = read_json(f"{features_dir}/manifest.json")
    except FileNotFoundError as exc:
        raise InputError(f"no features at {features_dir}: run the features job for that date first") from exc
    films = load_films(f"{features_dir}/films", len(manifest["genres"]), len(manifest["genome_tag_ids"]))
    users = load_users(f"{features_dir}/users", films.n_films)
    return Features(manifest, users, films)
