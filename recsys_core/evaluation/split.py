"""Temporal per-user holdout of a MovieLens-layout drop.

Each user's latest ratings are held out by the project's one holdout rule
(``recsys_core.ranking.holdout``: the last max(1, floor(fraction * n)) ratings by
(timestamp, movieId) of users with at least ``min_ratings``); ratings >= ``relevant_rating``
(``LIKED_RATING``) of the held-out part are the relevant films. The rest is written as a new drop in the same
layout (so the project's own ingest reads it exactly as a nightly run would), with tags on
held-out (user, film) pairs removed: a tag says the user watched the film.

Rows the split cannot read as a rating (unparsable, out of range, non-positive ids) are
passed to the training drop untouched so that ingest quarantines them as it would in a
nightly run. Re-ratings of a (user, film) pair are reduced to the latest one (ingest's
rule) before the holdout, so an older copy can never leak a held-out rating into training.

Everything is vectorized (pyarrow CSV reader, numpy sort); only a drop with unreadable
rows takes a slower pandas path.
"""

from __future__ import annotations

import csv
import logging
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recsys_core.data.csr import LIKED_RATING
from recsys_core.data.schemas import MIN_RATING
from recsys_core.errors import InputError
from recsys_core.ranking.holdout import HOLDOUT_FRACTION, MIN_HOLDOUT_RATINGS, holdout_mask

log = logging.getLogger(__name__)

RATINGS_FILE, TAGS_FILE = "ratings.csv", "tags.csv"
RATING_COLUMNS = ["userId", "movieId", "rating", "timestamp"]
MAX_RATING = 5.0
HELDOUT_FILE = "heldout.parquet"


def temporal_holdout(
    ratings: pd.DataFrame, fraction: float = HOLDOUT_FRACTION, min_ratings: int = MIN_HOLDOUT_RATINGS
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training part, held-out part) of a ratings frame with userId, movieId, timestamp.

    Used for the outer split and for the baselines' inner (tuning) split of the training part.
    """
    held = holdout_mask(
        ratings["userId"].to_numpy(), ratings["movieId"].to_numpy(), ratings["timestamp"].to_numpy(),
        fraction, min_ratings,
    )  # fmt: skip
    return ratings[~held].reset_index(drop=True), ratings[held].reset_index(drop=True)


@dataclass
class Split:
    train_dir: Path  # the training drop (MovieLens layout)
    train: pd.DataFrame  # the valid training ratings: userId, movieId, rating, timestamp
    heldout: pd.DataFrame  # the held-out ratings, same columns
    relevant_rating: float
    stats: dict = field(default_factory=dict)

    @property
    def relevant(self) -> pd.DataFrame:
        return self.heldout[self.heldout["rating"] >= self.relevant_rating]

    @property
    def ds(self) -> str:
        """A logical date whose as-of cut keeps every training rating: the last one's UTC date."""
        return _utc(int(self.train["timestamp"].max())).strftime("%Y-%m-%d")


def _utc(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _header(path: Path) -> list[str]:
    with path.open("r", encoding="utf-8", newline="") as f:
        first = f.readline()
    return [c.strip().strip('"') for c in first.strip("\r\n").split(",")]


def _read_ratings(path: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(numeric frame with NaN where unreadable, raw string rows) of ratings.csv.

    The raw strings are only kept (second value not None) when some row does not parse:
    those rows go to the training drop exactly as they came.
    """
    if not path.exists():
        raise InputError(f"{path}: ratings.csv is required")
    header = _header(path)
    missing = [c for c in RATING_COLUMNS if c not in header]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
    types = {"userId": pa.int64(), "movieId": pa.int64(), "rating": pa.float64(), "timestamp": pa.int64()}
    try:
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
        if any(table.column(c).null_count for c in RATING_COLUMNS):
            raise pa.ArrowInvalid("nulls")
        return table.select(RATING_COLUMNS).to_pandas(), None
    except pa.ArrowInvalid:
        log.info("%s has rows that do not parse: reading it as text", path)
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    numeric = pd.DataFrame({c: pd.to_numeric(raw[c], errors="coerce") for c in RATING_COLUMNS})
    return numeric, raw


def _valid_ratings(df: pd.DataFrame) -> np.ndarray:
    """Rows ingest would keep as ratings (apart from the movie lookup)."""
    r = df["rating"].to_numpy(dtype=np.float64)
    ok = df[RATING_COLUMNS].notna().all(axis=1).to_numpy()
    with np.errstate(invalid="ignore"):
        ok &= (df["userId"].to_numpy(dtype=np.float64) > 0) & (df["movieId"].to_numpy(dtype=np.float64) > 0)
        ok &= df["timestamp"].to_numpy(dtype=np.float64) >= 0
        ok &= (r >= MIN_RATING) & (r <= MAX_RATING) & (np.round(r * 2) == r * 2)
    return ok


def _latest_per_pair(df: pd.DataFrame) -> np.ndarray:
    """Bool per row: is it the latest (timestamp, then rating) rating of its (user, film)."""
    order = np.lexsort((df["rating"].to_numpy(), df["timestamp"].to_numpy(),
                        df["movieId"].to_numpy(), df["userId"].to_numpy()))  # fmt: skip
    u, m = df["userId"].to_numpy()[order], df["movieId"].to_numpy()[order]
    last = np.ones(len(order), dtype=bool)
    if len(order) > 1:
        last[:-1] = (u[1:] != u[:-1]) | (m[1:] != m[:-1])
    keep = np.empty(len(order), dtype=bool)
    keep[order] = last
    return keep


def _write_csv(table: pa.Table, path: Path) -> None:
    """CSV as GroupLens writes it: plain header, fields quoted only when needed, LF.

    pyarrow's writer quotes every string value, so text columns go through pandas (which
    quotes only fields with a comma, quote or line break); numeric tables stay in pyarrow.
    """
    if any(pa.types.is_string(t) or pa.types.is_large_string(t) for t in table.schema.types):
        table.to_pandas().to_csv(path, index=False, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        return
    with path.open("wb") as f:
        f.write((",".join(table.column_names) + "\n").encode("utf-8"))
        pacsv.write_csv(table, f, pacsv.WriteOptions(include_header=False))


def _write_ratings(numeric: pd.DataFrame, raw: pd.DataFrame | None, keep: np.ndarray, path: Path) -> None:
    if raw is not None:
        _write_csv(pa.Table.from_pandas(raw[keep], preserve_index=False), path)
        return
    frame = numeric[keep].astype({"userId": np.int64, "movieId": np.int64, "timestamp": np.int64})
    _write_csv(pa.Table.from_pandas(frame[RATING_COLUMNS], preserve_index=False), path)


def _filter_tags(src: Path, dst: Path, held_pairs: pd.DataFrame) -> tuple[int, int]:
    """Copy tags.csv without the rows on held-out (user, film) pairs: (rows read, dropped)."""
    header = _header(src)
    table = pacsv.read_csv(src, convert_options=pacsv.ConvertOptions(
        column_types={c: pa.string() for c in header}, strings_can_be_null=False))  # fmt: skip
    if "userId" not in header or "movieId" not in header:
        shutil.copyfile(src, dst)  # ingest will name the missing column
        return table.num_rows, 0
    ids = pd.DataFrame({c: pd.to_numeric(table.column(c).to_pandas(), errors="coerce") for c in ("userId", "movieId")})
    pairs = held_pairs[["userId", "movieId"]].drop_duplicates().assign(_held=True)
    marked = ids.merge(pairs, on=["userId", "movieId"], how="left")
    drop = marked["_held"].eq(True).to_numpy(dtype=bool)
    _write_csv(table.filter(pa.array(~drop)), dst)
    return table.num_rows, int(drop.sum())


def split_drop(
    data_dir: str | Path,
    work_dir: str | Path,
    fraction: float = HOLDOUT_FRACTION,
    min_ratings: int = MIN_HOLDOUT_RATINGS,
    relevant_rating: float = LIKED_RATING,
) -> Split:
    """Split the drop in ``data_dir``: the training drop goes to ``work_dir/train_drop``,
    the held-out ratings to ``work_dir/heldout.parquet``."""
    data_dir, work_dir = Path(data_dir), Path(work_dir)
    if not data_dir.is_dir():
        raise InputError(f"--data {data_dir}: not a directory")
    train_dir = work_dir / "train_drop"
    if train_dir.exists():
        shutil.rmtree(train_dir)
    train_dir.mkdir(parents=True)

    numeric, raw = _read_ratings(data_dir / RATINGS_FILE)
    valid = _valid_ratings(numeric)
    vidx = np.flatnonzero(valid)
    ratings = numeric.iloc[vidx].astype({"userId": np.int64, "movieId": np.int64, "timestamp": np.int64})
    latest = _latest_per_pair(ratings)
    duplicates = int((~latest).sum())
    ratings = ratings[latest]
    held = holdout_mask(ratings["userId"].to_numpy(), ratings["movieId"].to_numpy(),
                        ratings["timestamp"].to_numpy(), fraction, min_ratings)  # fmt: skip
    train, heldout = ratings[~held].reset_index(drop=True), ratings[held].reset_index(drop=True)
    if len(train) == 0:
        raise InputError(f"{data_dir / RATINGS_FILE}: no valid rating to train on")

    keep = ~valid  # unreadable rows go through to ingest's quarantine
    keep[vidx[np.flatnonzero(latest)[~held]]] = True
    _write_ratings(numeric, raw, keep, train_dir / RATINGS_FILE)
    tags_read = tags_dropped = 0
    for src in sorted(data_dir.iterdir()):
        if src.name == RATINGS_FILE or not src.is_file():
            continue
        if src.name == TAGS_FILE:
            tags_read, tags_dropped = _filter_tags(src, train_dir / TAGS_FILE, heldout)
        else:
            shutil.copyfile(src, train_dir / src.name)
    heldout.to_parquet(work_dir / HELDOUT_FILE, index=False)

    relevant = heldout[heldout["rating"] >= relevant_rating]
    stats = {
        "fraction": fraction,
        "min_ratings": min_ratings,
        "relevant_rating": relevant_rating,
        "rows_read": len(numeric),
        "unreadable_rows_passed_to_ingest": int((~valid).sum()),
        "duplicate_ratings_dropped": duplicates,
        "ratings": len(ratings),
        "users": int(ratings["userId"].nunique()),
        "films": int(ratings["movieId"].nunique()),
        "train_ratings": len(train),
        "train_films": int(train["movieId"].nunique()),
        "heldout_ratings": len(heldout),
        "heldout_users": int(heldout["userId"].nunique()),
        "relevant_heldout_ratings": len(relevant),
        "evaluated_users": int(relevant["userId"].nunique()),
        "heldout_films_not_in_train": int((~heldout["movieId"].isin(train["movieId"])).sum()),
        "tags_read": tags_read,
        "tags_dropped": tags_dropped,
        "first_rating": _utc(int(ratings["timestamp"].min())).isoformat(),
        "last_train_rating": _utc(int(train["timestamp"].max())).isoformat(),
        "last_rating": _utc(int(ratings["timestamp"].max())).isoformat(),
    }
    split = Split(train_dir, train, heldout, relevant_rating, stats)
    stats["ds"] = split.ds
    log.info("split: %d ratings -> %d training, %d held out of %d users (%d with a relevant film); "
             "%d tags dropped", len(ratings), len(train), len(heldout), stats["heldout_users"],
             stats["evaluated_users"], tags_dropped)  # fmt: skip
    return split


def read_heldout(work_dir: str | Path) -> pd.DataFrame:
    return pq.read_table(Path(work_dir) / HELDOUT_FILE).to_pandas()
