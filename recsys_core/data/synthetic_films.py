"""The films of a synthetic drop: titles, years, genres, links and the Tag Genome.

Split out of ``recsys_core.data.generator`` (which draws the latent taste space, the users
and their ratings): everything here is a function of a film's latent taste vector
(``Catalogue.latent``) and of the generator's seeded stream, drawn in the same order as
before, so a given (scale, seed) gives the same bytes.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from recsys_core.data.synthetic_shape import Catalogue, Shape

GENRES = {  # name: share of films carrying it
    "Action": 0.13, "Adventure": 0.07, "Animation": 0.05, "Children": 0.05,
    "Comedy": 0.29, "Crime": 0.09, "Documentary": 0.09, "Drama": 0.42,
    "Fantasy": 0.05, "Film-Noir": 0.006, "Horror": 0.10, "IMAX": 0.004,
    "Musical": 0.02, "Mystery": 0.05, "Romance": 0.13, "Sci-Fi": 0.05,
    "Thriller": 0.14, "War": 0.03, "Western": 0.02,
}  # fmt: skip
NO_GENRES = "(no genres listed)"

_ADJECTIVES = (
    "silent dark last lost golden broken hidden wild little secret red blue cold burning "
    "final endless bitter crimson distant electric empty fallen frozen gentle haunted hollow "
    "iron lonely midnight mystic northern pale quiet restless sacred savage scarlet shadow "
    "strange sweet twisted velvet wicked winter"
).split()
_NOUNS = (
    "river city heart road night dream king war house garden storm moon kingdom sea "
    "mountain island game stranger summer island voyage mirror machine planet empire letter "
    "promise journey forest ghost hunter legacy lesson memory mission orchard party prophet "
    "rebel secret signal station story thief tide valley witness"
).split()
_TAG_WORDS = (
    "atmospheric dystopia twist ending visually appealing dark comedy thought-provoking "
    "space surreal quirky cult classic time travel heist noir satire revenge coming of age "
    "anime based on a book psychological romance gangster friendship survival zombies war "
    "mafia artificial intelligence superhero musical biography courtroom espionage"
).split()


def write_header(path: Path, columns: list[str]) -> None:
    path.write_text(",".join(columns) + "\n", encoding="utf-8")


def append_csv(path: Path, table: pa.Table) -> None:
    with path.open("ab") as sink:
        pacsv.write_csv(
            table, sink, pacsv.WriteOptions(include_header=False, quoting_style="none")
        )


def _film_titles(shape: Shape, rng: np.random.Generator, years_of=None) -> tuple[list[str], np.ndarray]:
    n = shape.films
    years = np.clip(np.round(2018 - rng.exponential(18.0, n)), 1891, 2018).astype(int)
    if years_of is not None:  # the same draws, the years handed out differently
        years = years_of(years)
    adj = rng.integers(0, len(_ADJECTIVES), n)
    noun = rng.integers(0, len(_NOUNS), n)
    style = rng.random(n)
    titles = []
    for i in range(n):
        base = f"{_ADJECTIVES[adj[i]].title()} {_NOUNS[noun[i]].title()}"
        if style[i] < 0.06:
            base = f"{base}, The"  # GroupLens moves leading articles to the end
        elif style[i] < 0.08:
            base = f'{base}, or "{_NOUNS[noun[i] - 1].title()}"'
        elif style[i] < 0.09:
            base = f"{base}: Part {int(style[i] * 1000) % 5 + 2}"
        titles.append(base if style[i] > 0.995 else f"{base} ({years[i]})")
    return titles, years


def _film_genres(cat: Catalogue, rng: np.random.Generator) -> list[str]:
    latent_dim = cat.latent.shape[1]
    names = list(GENRES)
    prevalence = np.array([GENRES[g] for g in names])
    directions = rng.normal(0, 1, size=(len(names), latent_dim)).astype(np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    affinity = cat.latent @ directions.T * math.sqrt(latent_dim)  # ~N(0,1)
    logits = np.log(prevalence / (1 - prevalence))[None, :] + 1.6 * affinity
    has = rng.random(logits.shape) < 1 / (1 + np.exp(-logits))
    none = ~has.any(axis=1)
    fill = none & (rng.random(none.size) < 0.6)
    has[np.flatnonzero(fill), np.argmax(logits[fill], axis=1)] = True
    return [
        "|".join(names[j] for j in np.flatnonzero(row)) or NO_GENRES for row in has
    ]


def tag_names(n_tags: int, rng: np.random.Generator) -> list[str]:
    pool = sorted({f"{a} {b}" for a in _ADJECTIVES for b in _NOUNS} | set(_TAG_WORDS))
    if n_tags > len(pool):
        pool += [f"tag {i}" for i in range(n_tags - len(pool))]
    return [pool[i] for i in rng.permutation(len(pool))[:n_tags]]


def write_movies_and_links(out: Path, cat: Catalogue, shape: Shape, rng: np.random.Generator,
                           years_of=None) -> np.ndarray:  # fmt: skip
    """Write movies.csv and links.csv; return the (films,) title years. ``years_of`` maps the
    drawn years to the ones the films get (a permutation: the temporal generator's)."""
    titles, years = _film_titles(shape, rng, years_of)
    genres = _film_genres(cat, rng)
    with (out / "movies.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["movieId", "title", "genres"])
        w.writerows(zip(cat.movie_ids.tolist(), titles, genres))
    imdb = rng.choice(np.arange(1, 9_999_999), size=shape.films, replace=False)
    tmdb = rng.choice(np.arange(1, 999_999), size=shape.films, replace=False)
    missing_tmdb = rng.random(shape.films) < 0.002
    with (out / "links.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["movieId", "imdbId", "tmdbId"])
        for mid, i, t, miss in zip(cat.movie_ids.tolist(), imdb, tmdb, missing_tmdb):
            w.writerow([mid, f"{i:07d}", "" if miss else int(t)])
    return years


def write_genome(out: Path, cat: Catalogue, shape: Shape, rng: np.random.Generator) -> None:
    latent_dim = cat.latent.shape[1]
    n_tags = shape.genome_tags
    names = tag_names(n_tags, rng)
    with (out / "genome-tags.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["tagId", "tag"])
        w.writerows((i + 1, name) for i, name in enumerate(names))
    # Genome films: mostly the popular ones (the genome needs tags, tags need viewers).
    pop_rank = np.argsort(np.argsort(-cat.popularity)) / shape.films
    chosen = np.sort(np.argsort(pop_rank + rng.normal(0, 0.08, shape.films))[: shape.genome_films])
    loadings = rng.normal(0, 1, size=(n_tags, latent_dim)).astype(np.float32)
    loadings /= np.linalg.norm(loadings, axis=1, keepdims=True)
    tag_bias = rng.normal(-2.4, 0.7, n_tags)
    path = out / "genome-scores.csv"
    write_header(path, ["movieId", "tagId", "relevance"])
    tag_ids = np.arange(1, n_tags + 1, dtype=np.int32)
    for lo in range(0, chosen.size, 2_000):
        films = chosen[lo : lo + 2_000]
        signal = 2.2 * math.sqrt(latent_dim) * (cat.latent[films] @ loadings.T)
        z = tag_bias[None, :] + signal + rng.normal(0, 0.6, signal.shape)
        relevance = np.round(1 / (1 + np.exp(-z)), 5)
        table = pa.table(
            {
                "movieId": np.repeat(cat.movie_ids[films], n_tags),
                "tagId": np.tile(tag_ids, films.size),
                "relevance": relevance.ravel(),
            }
        )
        append_csv(path, table)
