"""The shape of a synthetic drop and its film catalogue: the types both generator modules use.

``recsys_core.data.generator`` draws the catalogue and the ratings,
``recsys_core.data.synthetic_films`` the films' titles, genres and genome; both read these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FULL_USERS = 283_228
FULL_FILMS = 58_098
FULL_RATINGS = 27_753_444
FULL_GENOME_FILMS = 13_176
FULL_TAG_APPLICATIONS = 1_108_997
GENOME_TAGS = 1_128

T_START = 789_652_009  # 1995-01-09 UTC: the first rating's time
T_END = 1_537_799_250  # 2018-09-26 UTC: the last one's


@dataclass(frozen=True)
class Shape:
    """Row counts of a generated drop at a given scale."""

    users: int
    films: int
    ratings: int
    genome_films: int
    genome_tags: int
    tag_applications: int

    @classmethod
    def at_scale(cls, scale: float, genome_tags: int = GENOME_TAGS) -> Shape:
        if not (0 < scale <= 10):
            raise ValueError(f"--scale must be in (0, 10], got {scale}")
        if genome_tags < 1:
            raise ValueError(f"genome_tags must be >= 1, got {genome_tags}")
        users = max(20, round(FULL_USERS * scale))
        films = max(50, round(FULL_FILMS * min(scale, 1.0) ** 0.5 * max(scale, 1.0)))
        ratings = max(users, round(FULL_RATINGS * scale))
        ratings = min(ratings, users * films // 3)
        genome_films = max(1, round(films * FULL_GENOME_FILMS / FULL_FILMS))
        tag_apps = round(FULL_TAG_APPLICATIONS * scale)
        return cls(users, films, ratings, genome_films, genome_tags, tag_apps)


@dataclass
class Catalogue:
    """Everything about the films that rating generation needs."""

    movie_ids: np.ndarray  # int32, ascending
    latent: np.ndarray  # (films, LATENT_DIM) float32
    bias: np.ndarray  # (films,) float32, quality
    popularity: np.ndarray  # (films,) float64, sums to 1
    segment_cdf: np.ndarray  # (N_SEGMENTS + 1, films) stacked CDFs, last row = plain popularity
    segment_logp: np.ndarray  # same rows, log-probabilities (for exact sampling)
    centres: np.ndarray  # (N_SEGMENTS, LATENT_DIM) taste segment centres
