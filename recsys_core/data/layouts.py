"""The GroupLens release layouts ingest reads, and how each file maps onto the snapshot tables.

Every release carries the same facts (ratings, films with genres, sometimes tags, the Tag
Genome, links) in one of four layouts:

============  ===================================================  ==========  =========
layout        files                                                separator   encoding
============  ===================================================  ==========  =========
``csv``       ratings.csv movies.csv [tags genome-scores genome-   ``,``       UTF-8
              tags links].csv, header row, RFC 4180 quoting
              (20M, 25M, 32M, latest, latest-small)
``ml-10m``    ratings.dat movies.dat [tags.dat], no header         ``::``      UTF-8
``ml-1m``     ratings.dat movies.dat users.dat, no header          ``::``      Latin-1
``ml-100k``   u.data (ratings), u.item (films, 19 genre flags),    tab / ``|`` Latin-1
              no header
============  ===================================================  ==========  =========

The ``.dat`` and 100K files have no quoting: a quote is an ordinary character there. Genre
names are normalised to the CSV releases' spelling (``Children's`` -> ``Children``; the
100K ``unknown`` flag alone -> ``(no genres listed)``), so the same data gives the same
snapshot rows whatever the layout. This module is plain Python (no Spark): the reader is
``recsys_core.spark.read``.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from recsys_core.data import schemas
from recsys_core.errors import ConfigError, InputError

UTF8 = "utf-8"
LATIN1 = "latin-1"
CP1252 = "cp1252"
#: Encodings a drop may be read with (Python codec name -> what the README and messages say).
#: Only ASCII-compatible single-byte encodings besides UTF-8: lines are split on the byte
#: ``\n`` before decoding, which is only right when every encoding of ``\n`` is that byte.
SUPPORTED_ENCODINGS = {"utf-8": UTF8, "iso8859-1": LATIN1, "cp1252": CP1252}

GENRE_SPELLING = {"Children's": "Children"}  # the 100K and 1M releases' name -> the CSV releases'

#: The 100K release's genre flags, in u.item's field order (u.genre).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip


@dataclass(frozen=True)
class Source:
    """One file of a layout and the snapshot table (``spec``) it feeds.

    ``fields`` names the fields by position in files without a header (the spec's columns
    among them keep their names); files with a header are matched by column name.
    ``genre_flags`` (u.item only) names the trailing 0/1 fields that make up ``genres``.
    """

    spec: schemas.FileSpec
    filename: str
    sep: str
    header: bool
    quoting: bool
    fields: tuple[str, ...] = ()
    genre_flags: tuple[str, ...] = ()

    @property
    def flag_fields(self) -> list[str]:
        return [f"_genre_{i}" for i in range(len(self.genre_flags))]


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    encoding: str
    sources: tuple[Source, ...]
    #: files whose presence picks this layout (any of them)
    markers: tuple[str, ...] = field(default=())

    def source(self, key: str) -> Source | None:
        return next((s for s in self.sources if s.spec.key == key), None)

    @property
    def filenames(self) -> list[str]:
        return [s.filename for s in self.sources]


def _csv(spec: schemas.FileSpec) -> Source:
    return Source(spec, spec.filename, ",", header=True, quoting=True)


def _dat(spec: schemas.FileSpec, filename: str) -> Source:
    return Source(spec, filename, "::", header=False, quoting=False, fields=tuple(spec.column_names))


CSV = Layout(
    "csv",
    "GroupLens CSV (20M, 25M, 32M, latest, latest-small): header row, RFC 4180 quoting",
    UTF8,
    tuple(_csv(spec) for spec in schemas.ALL_FILES),
    markers=tuple(spec.filename for spec in schemas.ALL_FILES),
)
ML_10M = Layout(
    "ml-10m",
    "MovieLens 10M: ratings.dat, movies.dat, tags.dat ('::' separated, no header)",
    UTF8,
    (_dat(schemas.RATINGS, "ratings.dat"), _dat(schemas.MOVIES, "movies.dat"), _dat(schemas.TAGS, "tags.dat")),
    markers=("ratings.dat", "movies.dat", "tags.dat"),
)
ML_1M = Layout(
    "ml-1m",
    "MovieLens 1M: ratings.dat, movies.dat, users.dat ('::' separated, no header, Latin-1)",
    LATIN1,
    (_dat(schemas.RATINGS, "ratings.dat"), _dat(schemas.MOVIES, "movies.dat")),
    markers=("ratings.dat", "movies.dat", "users.dat"),
)
ML_100K = Layout(
    "ml-100k",
    "MovieLens 100K: u.data (tab separated), u.item ('|' separated, genre flags), no header, Latin-1",
    LATIN1,
    (
        Source(schemas.RATINGS, "u.data", "\t", header=False, quoting=False, fields=tuple(schemas.RATINGS.column_names)),
        Source(
            schemas.MOVIES,
            "u.item",
            "|",
            header=False,
            quoting=False,
            fields=("movieId", "title", "release_date", "video_release_date", "imdb_url")
            + tuple(f"_genre_{i}" for i in range(len(ML100K_GENRES))),
            genre_flags=ML100K_GENRES,
        ),
    ),
    markers=("u.data", "u.item"),
)
LAYOUTS: dict[str, Layout] = {lay.name: lay for lay in (CSV, ML_10M, ML_1M, ML_100K)}


def detect_layout(present: Iterable[str], requested: str = "auto") -> Layout:
    """The layout of a drop from the names of the files in it (or the one ``requested``).

    ``.dat`` files are the 1M release when ``users.dat`` is there, else the 10M one.
    Raises InputError when files of two layouts are mixed, or none is recognised.
    """
    names = set(present)
    if requested != "auto":
        if requested not in LAYOUTS:
            raise ConfigError(f"--layout must be auto or one of {', '.join(LAYOUTS)}, got {requested!r}")
        return LAYOUTS[requested]
    found = []
    if names & set(CSV.markers):
        found.append(CSV)
    if {"ratings.dat", "movies.dat"} & names:
        found.append(ML_1M if "users.dat" in names else ML_10M)
    if names & set(ML_100K.markers):
        found.append(ML_100K)
    if len(found) > 1:
        mixed = ", ".join(f"{lay.name} ({', '.join(sorted(names & set(lay.markers)))})" for lay in found)
        raise InputError(
            f"the drop mixes the files of several layouts: {mixed}. Keep one release per directory "
            f"or pass --layout {'|'.join(LAYOUTS)}"
        )
    if not found:
        raise InputError(
            "no MovieLens files in the drop: expected ratings.csv + movies.csv (20M/25M/32M/latest), "
            "ratings.dat + movies.dat (1M/10M) or u.data + u.item (100K)"
            + (f"; found {', '.join(sorted(names))}" if names else "; the directory is empty or missing")
        )
    return found[0]


def normalise_encoding(name: str) -> str:
    """The canonical name of a supported encoding (``latin1``, ``ISO-8859-1`` -> ``latin-1``)."""
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        codec = None
    if codec not in SUPPORTED_ENCODINGS:
        raise ConfigError(
            f"--encoding {name!r} is not supported: use one of {', '.join(SUPPORTED_ENCODINGS.values())}"
        )
    return SUPPORTED_ENCODINGS[codec]


def parse_encodings(values: Iterable[str] | str | None, layout: Layout) -> dict[str, str]:
    """``--encoding`` values (``ENC`` for every file, ``FILE=ENC`` for one) -> {filename: encoding}.

    Only files given an encoding appear; the others keep the layout's default.
    """
    if values is None:
        return {}
    if isinstance(values, str):
        values = [values]
    chosen: dict[str, str] = {}
    for value in values:
        if "=" in value:
            name, enc = (part.strip() for part in value.split("=", 1))
            if name not in layout.filenames:
                raise ConfigError(
                    f"--encoding {value!r}: {name} is not a file of the {layout.name} layout "
                    f"({', '.join(layout.filenames)})"
                )
            chosen[name] = normalise_encoding(enc)
        else:
            enc = normalise_encoding(value)
            chosen.update({name: enc for name in layout.filenames if name not in chosen})
    return chosen


def encoding_map(explicit: Mapping[str, str], layout: Layout) -> dict[str, str]:
    """The encoding each file of ``layout`` is read with: explicit, else the layout's default."""
    return {name: explicit.get(name, layout.encoding) for name in layout.filenames}
