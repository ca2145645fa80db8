"""Write a CSV-layout drop (e.g. the generator's) in an older GroupLens layout: 100K, 1M, 10M.

For tests and demos of ``recsys_core.data.layouts``: the files are written the way
GroupLens shipped them (separators, no header, genre encoding, Latin-1 for 1M and 100K),
so ingest must give the same snapshot rows for both drops. What a layout cannot hold is
refused or dropped, as documented per function: 100K and 1M have no tags, genome or
links; 100K has no ``IMAX`` genre flag (see :func:`representable_in_100k`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from recsys_core.data.layouts import GENRE_SPELLING, LATIN1, ML100K_GENRES, UTF8
from recsys_core.data.schemas import GENRE_SEPARATOR, NO_GENRES

_OLD_SPELLING = {new: old for old, new in GENRE_SPELLING.items()}


def _rows(path: Path) -> Iterator[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        yield from csv.DictReader(f)


def _stars(rating: str) -> str:
    """``4.0`` -> ``4`` (whole stars as the old releases write them), ``3.5`` stays."""
    value = float(rating)
    return str(int(value)) if value.is_integer() else rating


def _write(path: Path, lines: Iterator[str], encoding: str, sep: str, n_fields: int) -> None:
    with path.open("w", encoding=encoding, newline="") as f:
        for line in lines:
            if len(line.split(sep)) != n_fields:
                raise ValueError(f"{path.name}: a field holds the separator {sep!r}: {line!r}")
            f.write(line + "\n")


def _old_genres(genres: str) -> str:
    return GENRE_SEPARATOR.join(_OLD_SPELLING.get(g, g) for g in genres.split(GENRE_SEPARATOR))


def representable_in_100k(genres: str) -> str:
    """The genres a 100K ``u.item`` can carry (its 19 flags have no ``IMAX``), CSV spelling."""
    known = {GENRE_SPELLING.get(g, g) for g in ML100K_GENRES if g != "unknown"}
    kept = [g for g in genres.split(GENRE_SEPARATOR) if g in known]
    return GENRE_SEPARATOR.join(kept) or NO_GENRES


def write_dat(csv_drop: Path | str, out: Path | str, release: str = "1m") -> Path:
    """``ratings.dat``, ``movies.dat`` and (10M) ``tags.dat`` / (1M) ``users.dat``, ``::`` separated.

    1M: Latin-1, genres spelled as in 1M (``Children's``), a ``users.dat`` with one line per
    user (placeholder demographics); 10M: UTF-8 and ``tags.dat`` when the drop has tags.
    """
    if release not in ("1m", "10m"):
        raise ValueError(f"release must be 1m or 10m, got {release!r}")
    src, out = Path(csv_drop), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    encoding = LATIN1 if release == "1m" else UTF8
    ratings = list(_rows(src / "ratings.csv"))
    _write(out / "ratings.dat", (f"{r['userId']}::{r['movieId']}::{_stars(r['rating'])}::{r['timestamp']}"
                                 for r in ratings), encoding, "::", 4)  # fmt: skip
    spell = _old_genres if release == "1m" else (lambda g: g)
    _write(out / "movies.dat", (f"{m['movieId']}::{m['title']}::{spell(m['genres'])}" for m in _rows(src / "movies.csv")),
           encoding, "::", 3)  # fmt: skip
    if release == "1m":
        users = sorted({int(r["userId"]) for r in ratings})
        _write(out / "users.dat", (f"{u}::F::25::0::00000" for u in users), encoding, "::", 5)
    elif (src / "tags.csv").exists():
        _write(out / "tags.dat", (f"{t['userId']}::{t['movieId']}::{t['tag']}::{t['timestamp']}"
                                  for t in _rows(src / "tags.csv")), encoding, "::", 4)  # fmt: skip
    return out


def write_100k(csv_drop: Path | str, out: Path | str) -> Path:
    """``u.data`` (tab separated) and ``u.item`` (``|`` separated, 19 genre flags), Latin-1.

    Genres the flags cannot hold (``IMAX``) are dropped: compare with a CSV drop whose
    genres went through :func:`representable_in_100k`.
    """
    src, out = Path(csv_drop), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "u.data", (f"{r['userId']}\t{r['movieId']}\t{_stars(r['rating'])}\t{r['timestamp']}"
                            for r in _rows(src / "ratings.csv")), LATIN1, "\t", 4)  # fmt: skip

    def item(m: dict[str, str]) -> str:
        genres = {_OLD_SPELLING.get(g, g) for g in m["genres"].split(GENRE_SEPARATOR)}
        flags = ["1" if g in genres else "0" for g in ML100K_GENRES]
        if "1" not in flags:
            flags[0] = "1"  # "unknown"
        year = m["title"].rstrip()[-5:-1] if m["title"].rstrip().endswith(")") else ""
        released = f"01-Jan-{year}" if year.isdigit() else ""
        return "|".join([m["movieId"], m["title"], released, "", "", *flags])

    _write(out / "u.item", (item(m) for m in _rows(src / "movies.csv")), LATIN1, "|", 5 + len(ML100K_GENRES))
    return out
