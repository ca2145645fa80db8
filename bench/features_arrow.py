"""``features/ds=…`` from a clean raw drop with pyarrow and numpy, for machines without Java.

The product is the Spark jobs: ``jobs/ingest.py`` (``recsys_core.spark.ingest``: validation,
quarantine, the as-of cut, one rating per pair) then ``jobs/features.py``
(``recsys_core.spark.features``). This module exists only so that the chain can be timed
where there is no Java and no Spark (the GPU machine of ``bench/gpu_chain.py``): it writes
the same ``features/ds=…`` partition (``films/``, ``users/``, ``manifest.json``; the same
columns, types, order and manifest, hashes included) for a drop that ingest would keep
whole, and refuses with ``InputError`` any drop in which ingest would reject a row (it has
no quarantine). ``tests/test_features_arrow.py`` runs both on the same drops and compares
what ``load_features`` reads. It writes no ``snapshot/``: nothing after features reads it
but the run record (``recsys_core.run_metrics``), which this benchmark does not write.

What it applies, as ingest and features do: the as-of cut (``timestamp <`` the end of
``ds``, UTC), the latest rating per (user, film) (on equal timestamps the higher rating),
films with at least ``min_film_ratings`` ratings indexed by ascending movieId, users by
ascending userId, genres sorted by name, genome relevance by tagId (null unless complete),
the year parsed from the title, ``mean_rating`` = the mean (in double) rounded to float32.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recsys_core.data.schemas import MAX_RATING, MIN_RATING, NO_GENRES
from recsys_core.data.vocab import vocabulary_hashes
from recsys_core.dates import as_of_cutoff
from recsys_core.errors import ConfigError, InputError
from recsys_core.fs_swap import publish_dir
from recsys_core.paths import Warehouse

# as recsys_core.spark.features (not imported from there: it imports pyspark)
RATINGS_PER_USER_FILE = 2_000_000
COMPRESSION = "zstd"  # the jobs' session writes zstd parquet (recsys_core.spark.session)
# Java's Pattern semantics of recsys_core.spark.features.YEAR_PATTERN: \d and \s are ASCII
# there, and $ also matches before one final line terminator.
YEAR = re.compile(
    r"\(([0-9]{4})(?:[-\u2013][0-9]{0,4})?\)[ \t\n\x0b\f\r]*(?:\r\n|[\n\r\u0085\u2028\u2029])?\Z"
)
# Text ingest rejects (recsys_core.spark.read): control characters, U+FFFD, a stray BOM, and
# quotes outside the RFC 4180 grammar (the same regex as read.WELL_FORMED_CSV).
BAD_TEXT = "[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f\\x{fffd}\\x{feff}]"
_FIELD = '(?:"(?:[^"]++|"")*+"|[^",]*+)'
WELL_FORMED_CSV = re.compile(f"{_FIELD}(?:,{_FIELD})*+")
SPARK_INSTEAD = "build the features with the Spark jobs (jobs/ingest.py, jobs/features.py)"


def _refuse(file: str, mask: np.ndarray, reason: str) -> None:
    """InputError when any row of ``file`` is flagged: ingest would reject it (``reason``)."""
    bad = np.flatnonzero(mask)
    if len(bad):
        raise InputError(f"{file}: {len(bad):,} row(s) ingest would reject ({reason}; the first is data row "
                         f"{bad[0] + 1:,}); this builder handles clean drops only: {SPARK_INSTEAD}")  # fmt: skip


def read_csv(
    raw: Path, name: str, types: dict[str, pa.DataType], required: bool = False
) -> pa.Table:
    """The ``types`` columns of ``raw/name`` (header row, UTF-8); text trimmed of spaces as ingest does.

    Raises InputError for a malformed line, an unparsable or missing value, text ingest
    rejects, or a ``required`` file without data rows (pyarrow's own error is kept in the
    message). An optional file may have a header alone, as in ingest.
    """
    path = raw / name
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 24),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                include_columns=list(types),
                null_values=[""],
                strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{name}: cannot be read as a clean CSV ({exc}); {SPARK_INSTEAD}") from exc
    if required and table.num_rows == 0:
        raise InputError(f"{name} has a header but no data rows: {path}")
    columns = {}
    for column, kind in types.items():
        values = table.column(column)
        if pa.types.is_string(kind):
            values = pc.utf8_trim(values, characters=" ")
            values = pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.string()), values)
            _refuse(name, pc.fill_null(pc.match_substring_regex(values, BAD_TEXT), False).to_numpy(),
                    f"a control character, U+FFFD or a stray BOM in {column}")  # fmt: skip
        _refuse(name, values.is_null().to_numpy(), f"missing:{column}")
        columns[column] = values
    if any(pa.types.is_string(kind) for kind in types.values()):
        _check_quotes(path, name)
    return pa.table(columns)


def _check_quotes(path: Path, name: str) -> None:
    """Ingest rejects a line with an odd number of quotes or quotes outside RFC 4180 fields."""
    with path.open(encoding="utf-8", newline="") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if '"' in line and (line.count('"') % 2 or not WELL_FORMED_CSV.fullmatch(line)):
                raise InputError(
                    f"{name}: line {number:,} has a quote ingest would reject; {SPARK_INSTEAD}"
                )


def _ids(table: pa.Table, column: str, name: str) -> np.ndarray:
    ids = table.column(column).to_numpy()
    _refuse(name, ids <= 0, f"non_positive_id:{column}")
    return ids


def _known(ids: np.ndarray, sorted_known: np.ndarray) -> np.ndarray:
    """Whether each id is in ``sorted_known`` (ascending, unique)."""
    at = np.minimum(np.searchsorted(sorted_known, ids), max(len(sorted_known) - 1, 0))
    return sorted_known[at] == ids if len(sorted_known) else np.zeros(len(ids), dtype=bool)


def _unique_ids(table: pa.Table, column: str, name: str) -> np.ndarray:
    """The ids of a lookup file (movies, genome tags), ascending; duplicates are rejects."""
    ids = _ids(table, column, name)
    order = np.argsort(ids, kind="stable")
    dup = np.zeros(len(ids), dtype=bool)
    dup[order[1:]] = ids[order[1:]] == ids[order[:-1]]
    _refuse(name, dup, f"duplicate:{column}")
    return order


def read_ratings(raw: Path, movie_ids: np.ndarray, cutoff: int) -> dict[str, np.ndarray]:
    """The snapshot's ratings: valid, before ``cutoff``, the latest per (user, film), sorted by (user, film)."""
    name = "ratings.csv"
    t = read_csv(raw, name, {"userId": pa.int32(), "movieId": pa.int32(), "rating": pa.float64(),
                             "timestamp": pa.int64()}, required=True)  # fmt: skip
    user, movie = _ids(t, "userId", name), _ids(t, "movieId", name)
    rating, ts = t.column("rating").to_numpy(), t.column("timestamp").to_numpy()
    _refuse(name, np.isnan(rating), "rating_nan")
    _refuse(name, (rating < MIN_RATING) | (rating > MAX_RATING), "rating_out_of_range")
    _refuse(name, rating * 2 != np.floor(rating * 2), "rating_off_half_star_grid")
    _refuse(name, ts < 0, "negative_timestamp")
    _refuse(name, ~_known(movie, movie_ids), "unknown_movie")
    keep = ts < cutoff
    user, movie, rating, ts = user[keep], movie[keep], rating[keep], ts[keep]
    key = (user.astype(np.int64) << 31) | movie
    if len(key) > 1 and not np.all(key[1:] > key[:-1]):  # GroupLens files come sorted and unique
        order = np.lexsort((rating, ts, movie, user))  # the last of a pair: latest, then highest
        user, movie, rating, ts, key = (
            user[order],
            movie[order],
            rating[order],
            ts[order],
            key[order],
        )
        last = np.append(key[1:] != key[:-1], True)
        user, movie, rating, ts = user[last], movie[last], rating[last], ts[last]
    if len(user) == 0:
        raise InputError(
            f"{name}: no valid rating before the end of the as-of day (cut at {cutoff})"
        )
    return {"user": user, "movie": movie, "rating": rating, "timestamp": ts}


def read_genome(raw: Path, movie_ids: np.ndarray) -> tuple[list[int], pa.Table | None]:
    """(tag ids ascending, genome rows or None) as the snapshot holds them; ([], None) without genome."""
    if not (raw / "genome-tags.csv").exists():
        if (raw / "genome-scores.csv").exists():
            raise InputError("genome-scores.csv is present but genome-tags.csv is missing")
        return [], None
    tags = read_csv(raw, "genome-tags.csv", {"tagId": pa.int32(), "tag": pa.string()})
    tag_ids = tags.column("tagId").to_numpy()[_unique_ids(tags, "tagId", "genome-tags.csv")]
    if not (raw / "genome-scores.csv").exists():
        return [], None  # features needs both snapshot tables to use the genome
    name = "genome-scores.csv"
    g = read_csv(raw, name, {"movieId": pa.int32(), "tagId": pa.int32(), "relevance": pa.float64()})
    movie, tag = _ids(g, "movieId", name), _ids(g, "tagId", name)
    relevance = g.column("relevance").to_numpy()
    _refuse(name, np.isnan(relevance), "relevance_nan")
    _refuse(name, (relevance < 0) | (relevance > 1), "relevance_out_of_range")
    _refuse(name, ~_known(movie, movie_ids), "unknown_movie")
    _refuse(name, ~_known(tag, tag_ids), "unknown_tag")
    rows = pa.table({"movieId": movie, "tagId": tag, "relevance": relevance.astype(np.float32)})
    return [int(t) for t in tag_ids], rows


def _list_array(
    offsets: np.ndarray, values: np.ndarray, valid: np.ndarray | None = None
) -> pa.Array:
    mask = None if valid is None else pa.array(~valid)
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values), mask=mask)


def genome_column(
    rows: pa.Table | None, film_movie_ids: np.ndarray, n_tags: int
) -> tuple[pa.Array, int]:
    """(genome list per film: relevance by tagId when the film has each tag once, else null;
    the number of films with genome rows that are incomplete)."""
    n = len(film_movie_ids)
    if rows is None or n_tags == 0:
        return pa.nulls(n, pa.list_(pa.float32())), 0
    movie = rows.column("movieId").to_numpy()
    in_vocab = _known(movie, film_movie_ids)
    film = np.searchsorted(film_movie_ids, movie[in_vocab])
    tag, rel = (
        rows.column("tagId").to_numpy()[in_vocab],
        rows.column("relevance").to_numpy()[in_vocab],
    )
    key = (film.astype(np.int64) << 32) | tag
    if len(key) > 1 and not np.all(
        key[1:] > key[:-1]
    ):  # GroupLens files come sorted by (movieId, tagId)
        order = np.lexsort((rel, tag, film))
        film, tag, rel = film[order], tag[order], rel[order]
    size = np.bincount(film, minlength=n)
    new_tag = np.ones(len(film), dtype=bool)
    new_tag[1:] = (film[1:] != film[:-1]) | (tag[1:] != tag[:-1])
    distinct = np.bincount(film[new_tag], minlength=n)
    complete = (size == n_tags) & (distinct == n_tags)
    values = rel[complete[film]]
    offsets = np.concatenate([[0], np.cumsum(np.where(complete, n_tags, 0))])
    return _list_array(offsets, values, complete), int(np.sum((size > 0) & ~complete))


def films_table(movies: pa.Table, counts: np.ndarray, sums: np.ndarray, movie_ids: np.ndarray,
                genres: list[str], genome: pa.Array) -> pa.Table:  # fmt: skip
    """The ``films`` table of the vocabulary (``movies`` rows and ``counts``/``sums`` in movieId order)."""
    titles = movies.column("title").to_pylist()
    years = [int(m.group(1)) if (m := YEAR.search(t)) else None for t in titles]
    index = {g: i for i, g in enumerate(genres)}
    hot = np.zeros((len(titles), len(genres)), dtype=np.float32)
    for row, text in enumerate(movies.column("genres").to_pylist()):
        for part in text.split("|"):
            if part in index:
                hot[row, index[part]] = 1.0
    n = len(titles)
    return pa.table({
        "film_idx": pa.array(np.arange(n, dtype=np.int32)),
        "movie_id": pa.array(movie_ids.astype(np.int32)),
        "title": pa.array(titles, pa.string()),
        "year": pa.array(years, pa.int32()),
        "genres": _list_array(np.arange(n + 1) * len(genres), hot.reshape(-1)),
        "genome": genome,
        "n_ratings": pa.array(counts.astype(np.int32)),
        "mean_rating": pa.array((sums / counts).astype(np.float32)),
    })  # fmt: skip


def users_parts(
    ratings: dict[str, np.ndarray], film_movie_ids: np.ndarray
) -> tuple[list[pa.Table], np.ndarray, np.ndarray]:
    """(``users`` in parts of whole users, ~``RATINGS_PER_USER_FILE`` ratings each; user ids;
    indptr of the vocabulary ratings per user), from ``read_ratings``' (user, movieId) order."""
    first = np.ones(len(ratings["user"]), dtype=bool)
    first[1:] = ratings["user"][1:] != ratings["user"][:-1]
    user_ids, user_idx = ratings["user"][first], np.cumsum(first) - 1
    in_vocab = _known(ratings["movie"], film_movie_ids)
    film_idx = np.searchsorted(film_movie_ids, ratings["movie"][in_vocab]).astype(np.int32)
    rows = user_idx[in_vocab]  # ratings are sorted by (user, movieId) = (user_idx, film_idx)
    rating = ratings["rating"][in_vocab].astype(np.float32)
    ts = ratings["timestamp"][in_vocab].astype(np.int64)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(user_ids)))])
    n_parts = max(1, math.ceil(len(ratings["user"]) / RATINGS_PER_USER_FILE))
    bounds = np.unique(np.searchsorted(indptr, np.linspace(0, indptr[-1], n_parts + 1)[1:-1]))
    cuts = [0, *[int(b) for b in bounds if 0 < b < len(user_ids)], len(user_ids)]
    parts = []
    for lo, hi in itertools.pairwise(cuts):
        a, b = int(indptr[lo]), int(indptr[hi])
        offsets = indptr[lo : hi + 1] - a
        parts.append(pa.table({
            "user_idx": pa.array(np.arange(lo, hi, dtype=np.int32)),
            "user_id": pa.array(user_ids[lo:hi].astype(np.int32)),
            "film_idx": _list_array(offsets, film_idx[a:b]),
            "rating": _list_array(offsets, rating[a:b]),
            "timestamp": _list_array(offsets, ts[a:b]),
        }))  # fmt: skip
    return parts, user_ids, indptr


def build_features(
    raw_dir: str | Path, warehouse: Warehouse, ds: str, min_film_ratings: int = 1
) -> dict:
    """Write ``features/ds=…`` of ``warehouse`` from the drop in ``raw_dir``; return the manifest.

    Raises ConfigError for ``min_film_ratings < 1``, InputError for a missing file, a drop
    with a row ingest would reject, or no rating / no film left (as the Spark jobs do).
    """
    if min_film_ratings < 1:
        raise ConfigError(f"--min-film-ratings must be >= 1, got {min_film_ratings}")
    raw = Path(raw_dir)
    for required in ("ratings.csv", "movies.csv"):
        if not (raw / required).is_file():
            raise InputError(
                f"required file {required} is missing from the drop ({raw / required})"
            )
    movies = read_csv(
        raw,
        "movies.csv",
        {"movieId": pa.int32(), "title": pa.string(), "genres": pa.string()},
        required=True,
    )
    movies = movies.take(pa.array(_unique_ids(movies, "movieId", "movies.csv")))
    movie_ids = movies.column("movieId").to_numpy()
    ratings = read_ratings(raw, movie_ids, as_of_cutoff(ds))
    tag_ids, genome_rows = read_genome(raw, movie_ids)

    at = np.searchsorted(movie_ids, ratings["movie"])
    counts = np.bincount(at, minlength=len(movie_ids))
    sums = np.bincount(
        at, weights=ratings["rating"], minlength=len(movie_ids)
    )  # half stars: exact in double
    vocab = np.flatnonzero(counts >= min_film_ratings)
    if len(vocab) == 0:
        raise InputError(f"no film has >= {min_film_ratings} ratings in the snapshot for ds={ds}")
    films = movies.take(pa.array(vocab))
    film_ids = movie_ids[vocab]
    genres = sorted(
        {g for text in films.column("genres").to_pylist() for g in text.split("|")}
        - {"", NO_GENRES}
    )
    genome, incomplete = genome_column(genome_rows, film_ids, len(tag_ids))
    films_out = films_table(films, counts[vocab], sums[vocab], film_ids, genres, genome)
    parts, user_ids, indptr = users_parts(ratings, film_ids)
    manifest = {
        "ds": ds,
        "params": {"min_film_ratings": min_film_ratings},
        "counts": {
            "films": len(film_ids),
            "users": len(user_ids),
            "users_without_vocabulary_ratings": int(np.sum(np.diff(indptr) == 0)),
            "ratings": int(indptr[-1]),
            "films_with_genome": len(film_ids) - genome.null_count,
            "films_with_incomplete_genome": incomplete,
        },
        "genres": genres,
        "genome_tag_ids": tag_ids,
        "hashes": vocabulary_hashes(film_ids, user_ids, genres, tag_ids),
    }

    def write(staging: str) -> None:
        Path(staging, "films").mkdir()
        Path(staging, "users").mkdir()
        pq.write_table(films_out, f"{staging}/films/part-00000.parquet", compression=COMPRESSION)
        # a file per thread: the parquet encoder and zstd release the GIL
        with ThreadPoolExecutor(max_workers=min(len(parts), 16)) as pool:
            list(pool.map(lambda ip: pq.write_table(ip[1], f"{staging}/users/part-{ip[0]:05d}.parquet",
                                                    compression=COMPRESSION), enumerate(parts)))  # fmt: skip
        for table in ("films", "users"):
            Path(staging, table, "_SUCCESS").touch()
        Path(staging, "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))

    publish_dir(warehouse.features(ds), write)
    return manifest
