"""The snapshot's input tables: which files, which columns, which types.

Named after the CSV releases (20M/25M/32M/latest), whose files have a header row, are
UTF-8, quote a field only when it holds a comma or a quote (a quote inside is doubled),
and end lines with LF or CRLF. ``ratings`` and ``movies`` are required; the Tag Genome,
tags and links are optional. The older layouts (10M, 1M, 100K) map their files onto the
same specs: see ``recsys_core.data.layouts``.
"""

from __future__ import annotations

from dataclasses import dataclass

INT = "int"
LONG = "long"
DOUBLE = "double"
STRING = "string"


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = False


@dataclass(frozen=True)
class FileSpec:
    """One input table: its CSV name (also the key of the manifest's ``files``), its columns
    in GroupLens order, whether it must exist."""

    key: str
    filename: str
    columns: tuple[Column, ...]
    required: bool

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


RATINGS = FileSpec(
    "ratings",
    "ratings.csv",
    (Column("userId", INT), Column("movieId", INT), Column("rating", DOUBLE), Column("timestamp", LONG)),
    required=True,
)
MOVIES = FileSpec(
    "movies",
    "movies.csv",
    (Column("movieId", INT), Column("title", STRING), Column("genres", STRING)),
    required=True,
)
GENOME_SCORES = FileSpec(
    "genome_scores",
    "genome-scores.csv",
    (Column("movieId", INT), Column("tagId", INT), Column("relevance", DOUBLE)),
    required=False,
)
GENOME_TAGS = FileSpec(
    "genome_tags",
    "genome-tags.csv",
    (Column("tagId", INT), Column("tag", STRING)),
    required=False,
)
TAGS = FileSpec(
    "tags",
    "tags.csv",
    (Column("userId", INT), Column("movieId", INT), Column("tag", STRING), Column("timestamp", LONG)),
    required=False,
)
LINKS = FileSpec(
    "links",
    "links.csv",
    (Column("movieId", INT), Column("imdbId", STRING), Column("tmdbId", INT, nullable=True)),
    required=False,
)

ALL_FILES: tuple[FileSpec, ...] = (RATINGS, MOVIES, GENOME_SCORES, GENOME_TAGS, TAGS, LINKS)

NO_GENRES = "(no genres listed)"
GENRE_SEPARATOR = "|"
MIN_RATING = 0.5
MAX_RATING = 5.0
