"""A seeded, MovieLens-shaped synthetic drop (ratings, movies, genome, tags, links).

At scale 1.0 the output has the shape of the September 2018 "latest" release: 27,753,444
ratings by 283,228 users of 58,098 films (sparse movieIds up to ~194K), ~1.1M tag
applications, a Tag Genome of 13,176 films x 1,128 tags, timestamps 1995-01-09 ..
2018-09-26, half-star ratings with mean ~3.5 and mode 4.0.

How it is built, and why:
- Taste is low-rank: films and users live in a ``LATENT_DIM`` space. Users belong to one
  of ``N_SEGMENTS`` taste segments (a centre plus a personal offset). *Which* films a
  user rates is drawn from the segment's distribution (global popularity tilted by
  taste), so a top-N recommender has something real to learn; *how* they rate is the
  user's own affinity plus biases and noise, mapped onto the real rating histogram.
- Popularity is heavy-tailed by construction (a rank curve through MovieLens-like knots)
  and activity is log-normal (min 1, median ~30, a few thousand at the top).
- Genres and genome relevance are functions of the film's latent vector, so content
  features carry taste signal.
- Users are generated in fixed-size chunks, each with its own seeded stream, so memory
  stays flat and output is identical for a given (scale, seed) whatever the machine.

At small scales users and ratings scale linearly but films scale with sqrt(scale), so a
0.001 sample (283 users, ~1.8K films) keeps a usable density; full-scale shape is exact.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from recsys_core.data.synthetic_films import (
    append_csv,
    tag_names,
    write_genome,
    write_header,
    write_movies_and_links,
)
from recsys_core.data.synthetic_shape import (  # noqa: F401 (FULL_*: the generator's public figures)
    FULL_FILMS,
    FULL_GENOME_FILMS,
    FULL_RATINGS,
    FULL_TAG_APPLICATIONS,
    FULL_USERS,
    GENOME_TAGS,
    T_END,
    T_START,
    Catalogue,
    Shape,
)
from recsys_core.data.synthetic_time import TemporalShape, Timeline, spread_years
from recsys_core.data.synthetic_time import user_times as _timestamps
from recsys_core.progress import Progress

log = logging.getLogger(__name__)

MAX_MOVIE_ID_RATIO = 193_886 / FULL_FILMS  # movieIds are sparse, up to ~194K at full scale

LATENT_DIM = 16
N_SEGMENTS = 48
TASTE_TILT = 3.5  # how strongly a segment's taste reshapes which films its users pick
EXPLORE_SHARE = 0.0  # share of a user's picks drawn from plain (untilted) popularity
HEAD_APPEAL = 0.5  # taste-vector length of the top film relative to the tail (broad appeal)
USERS_PER_CHUNK = 8_192

# MovieLens-like rating histogram (0.5 .. 5.0 in half stars); mean ~3.5, mode 4.0.
RATING_VALUES = np.arange(1, 11) / 2.0
RATING_SHARES = np.array([1.6, 3.2, 1.6, 6.6, 5.0, 19.9, 12.5, 26.6, 8.5, 14.4])
RATING_LABELS = pa.array([f"{v:.1f}" for v in RATING_VALUES])

# Relative film popularity by rank at full scale (rank, weight), interpolated in log-log
# space. These are draw weights, not counts: a user rates a film once however often it is
# drawn, and strong taste saturates each segment's favourites, which pushes draws into
# the tail. Tuned together with TASTE_TILT so that at scale 1.0 the top film gets ~100K
# ratings, about half the films fewer than 5 and ~7% none (as in the real release), while
# EASE finds held-out films about twice as well as popularity (ml-latest-small: 2.0x).
POPULARITY_KNOTS = np.array(
    [
        (1, 3_000_000),
        (10, 1_500_000),
        (100, 400_000),
        (500, 80_000),
        (1_500, 13_000),
        (4_000, 1_100),
        (8_000, 40),
        (15_000, 1.5),
        (22_000, 0.35),
        (29_000, 0.1),
        (40_000, 0.04),
        (58_098, 0.015),
    ],
    dtype=np.float64,
)

def popularity_curve(n_films: int) -> np.ndarray:
    """Relative popularity by rank (rank 0 first) for a catalogue of n_films."""
    ranks = (np.arange(n_films) + 0.5) / n_films * FULL_FILMS
    log_r = np.log(np.clip(ranks, 1.0, None))
    knots_r, knots_c = np.log(POPULARITY_KNOTS[:, 0]), np.log(POPULARITY_KNOTS[:, 1])
    return np.exp(np.interp(log_r, knots_r, knots_c))


def make_catalogue(shape: Shape, rng: np.random.Generator) -> Catalogue:
    n = shape.films
    max_id = max(n, round(n * MAX_MOVIE_ID_RATIO))
    movie_ids = np.sort(rng.choice(np.arange(2, max_id + 1), size=n - 1, replace=False))
    movie_ids = np.concatenate([[1], movie_ids]).astype(np.int32)

    latent = rng.normal(0.0, 1.0 / math.sqrt(LATENT_DIM), size=(n, LATENT_DIM)).astype(np.float32)
    # Lower ids tend to be older, better-known films: popularity rank follows id loosely.
    id_frac = np.arange(n) / n
    rank_of_film = np.argsort(np.argsort(1.5 * id_frac + rng.normal(0, 1, n)))
    popularity = popularity_curve(n)[rank_of_film]
    # Blockbusters appeal broadly: shorter taste vectors at the head, so that every segment
    # watches them (the top film reaches about a third of all users, as in MovieLens).
    full_rank = (rank_of_film + 1) * FULL_FILMS / n
    latent *= (HEAD_APPEAL + (1 - HEAD_APPEAL) * np.minimum(1.0, np.log10(full_rank) / 3.0)).astype(np.float32)[:, None]
    popularity /= popularity.sum()
    bias = (0.45 * rng.normal(0, 1, n) + 0.08 * np.log(popularity / popularity.mean())).astype(
        np.float32
    )

    centres = rng.normal(0.0, 1.0, size=(N_SEGMENTS, LATENT_DIM)).astype(np.float32)
    # Tilt by taste, normalised per film over the segments: averaged over segments, each
    # film keeps its global popularity, so the knots still set the popularity curve.
    tilt = TASTE_TILT * (centres @ latent.T).astype(np.float64)
    tilt -= tilt.max(axis=0, keepdims=True)
    tilt -= np.log(np.exp(tilt).mean(axis=0, keepdims=True))
    logits = np.log(popularity)[None, :] + tilt
    logits = np.vstack([logits, np.log(popularity)[None, :]])
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    logp = np.log(probs)
    cdf = np.cumsum(probs, axis=1)
    cdf[:, -1] = 1.0
    return Catalogue(movie_ids, latent, bias, popularity, cdf, logp, centres)


def user_activity(shape: Shape, rng: np.random.Generator, sigma: float = 1.55) -> np.ndarray:
    """Ratings per user: log-normal (spread ``sigma``), min 1, summing exactly to
    shape.ratings (median ~30 at the full-scale mean)."""
    cap = max(1, min(25_000, int(0.4 * shape.films)))
    raw = rng.lognormal(mean=math.log(30.0), sigma=sigma, size=shape.users)
    counts = np.clip(np.round(raw * shape.ratings / raw.sum()), 1, cap).astype(np.int64)
    for _ in range(100):
        diff = shape.ratings - int(counts.sum())
        if diff == 0:
            break
        room = counts < cap if diff > 0 else counts > 1
        idx = np.flatnonzero(room)
        # Spread the correction over users in proportion to their activity.
        pick = rng.choice(idx, size=min(abs(diff), idx.size), replace=False,
                          p=counts[idx] / counts[idx].sum())
        counts[pick] += 1 if diff > 0 else -1
    if counts.sum() != shape.ratings:
        raise RuntimeError("could not distribute ratings over users (scale too small?)")
    return counts


def _films_for_users(
    cat: Catalogue, segments: np.ndarray, counts: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(local user index, film index) pairs, sorted: ``counts[u]`` distinct films per user.

    Light users draw with replacement from their segment's CDF mixed with plain
    popularity; duplicates are dropped and the shortfall redrawn a few rounds. Heavy users,
    and whatever is still short after that, take an exact weighted sample without
    replacement (Gumbel top-k over the whole catalogue).
    """
    n_films = cat.movie_ids.size
    n_rows = cat.segment_cdf.shape[0]
    flat_cdf = (cat.segment_cdf + np.arange(n_rows)[:, None]).ravel()
    heavy = counts > max(50, n_films // 40)
    need = np.where(heavy, 0, counts)
    taken = np.empty(0, dtype=np.int64)
    for _round in range(4):
        users = np.flatnonzero(need)
        if users.size == 0:
            break
        u = np.repeat(users, np.ceil(need[users] * 1.3 + 2).astype(np.int64))
        row = np.where(rng.random(u.size) < EXPLORE_SHARE, n_rows - 1, segments[u])
        film = np.searchsorted(flat_cdf, row + rng.random(u.size), side="right") - row * n_films
        new = np.unique(u * n_films + np.clip(film, 0, n_films - 1))
        new = new[~np.isin(new, taken, assume_unique=True)]
        new = _random_subset_per_owner(new, new // n_films, need, rng)
        taken = np.concatenate([taken, new])
        need = need - np.bincount(new // n_films, minlength=counts.size)
    need = np.where(heavy, counts, need)
    taken.sort()
    owners = taken // n_films
    extra = [taken]
    mix = (1 - EXPLORE_SHARE) * np.exp(cat.segment_logp[:-1]) + EXPLORE_SHARE * np.exp(
        cat.segment_logp[-1]
    )
    for user in np.flatnonzero(need):
        score = np.log(mix[segments[user]]) + rng.gumbel(size=n_films)
        lo, hi = np.searchsorted(owners, [user, user + 1])
        score[taken[lo:hi] % n_films] = -np.inf
        top = np.argpartition(-score, need[user] - 1)[: need[user]]
        extra.append(user * n_films + top.astype(np.int64))
    keys = np.sort(np.concatenate(extra))
    return keys // n_films, keys % n_films


def _random_subset_per_owner(
    keys: np.ndarray, owner: np.ndarray, limit: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """A uniformly random subset of ``keys`` with at most ``limit[o]`` per owner o."""
    order = np.lexsort((rng.random(keys.size), owner))
    keys, owner = keys[order], owner[order]
    rank = np.arange(keys.size) - np.searchsorted(owner, owner, side="left")
    return keys[rank < limit[owner]]


def rating_thresholds(z: np.ndarray) -> np.ndarray:
    """Cut points on the latent score that reproduce RATING_SHARES on a sample."""
    cum = np.cumsum(RATING_SHARES / RATING_SHARES.sum())[:-1]
    return np.quantile(z, cum)


def generate(out: Path | str, scale: float = 0.001, seed: int = 42, genome_tags: int = GENOME_TAGS,
             temporal: TemporalShape | None = None) -> Shape:  # fmt: skip
    """Write a MovieLens-layout drop into ``out`` and return its shape.

    ``temporal`` (off by default) draws the ratings along a timeline: films released over
    the years, taste that drifts along each user's history, and optionally a sparse,
    release-driven shape (``recsys_core.data.synthetic_time``). Without it a given
    (scale, seed) writes the same bytes as it always has.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shape = Shape.at_scale(scale, genome_tags)
    if temporal is not None:
        shape = temporal.reshape(shape)
    rng = np.random.default_rng(seed)
    t0 = time.monotonic()
    log.info("generating %s into %s (seed %d)", shape, out, seed)
    cat = make_catalogue(shape, rng)
    years_of = None if temporal is None else (lambda drawn: spread_years(drawn, cat.popularity))
    years = write_movies_and_links(out, cat, shape, rng, years_of)
    write_genome(out, cat, shape, rng)
    log.info("catalogue, genome and links written in %.1fs", time.monotonic() - t0)

    counts = user_activity(shape, rng) if temporal is None else user_activity(shape, rng, temporal.activity_sigma)
    segments = rng.integers(0, N_SEGMENTS, shape.users)
    user_offset = rng.normal(0, 0.6, size=(shape.users, LATENT_DIM)).astype(np.float32)
    user_bias = rng.normal(0, 0.4, shape.users).astype(np.float32)
    tagger = rng.random(shape.users) < 0.08
    tagger_ratings = int(counts[tagger].sum())
    tag_share = min(1.0, shape.tag_applications / tagger_ratings) if tagger_ratings else 0.0
    tag_vocabulary = np.array(tag_names(shape.genome_tags, np.random.default_rng([seed, 9])))

    ratings_path, tags_path = out / "ratings.csv", out / "tags.csv"
    write_header(ratings_path, ["userId", "movieId", "rating", "timestamp"])
    write_header(tags_path, ["userId", "movieId", "tag", "timestamp"])
    thresholds: np.ndarray | None = None
    timeline = None if temporal is None else Timeline(temporal, cat, years, segments, seed)
    progress = Progress("generated", total=shape.ratings, unit="ratings", every_s=0.0, logger=log)
    for lo in range(0, shape.users, USERS_PER_CHUNK):
        hi = min(lo + USERS_PER_CHUNK, shape.users)
        crng = np.random.default_rng([seed, 1, lo])
        if timeline is None:
            local_user, film = _films_for_users(cat, segments[lo:hi], counts[lo:hi], crng)
            user, ts = lo + local_user, None
            taste = cat.centres[segments[user]] + user_offset[user]
        else:  # times first: which films a user picks depends on when
            local_user, film, ts, centre = timeline.chunk(np.arange(lo, hi), counts[lo:hi], crng)
            user = lo + local_user
            taste = centre + user_offset[user]
        affinity = np.einsum("ij,ij->i", taste, cat.latent[film]) * (1.0 / math.sqrt(1.36))
        z = affinity + user_bias[user] + cat.bias[film] + crng.normal(0, 0.7, user.size)
        if thresholds is None:
            thresholds = rating_thresholds(z)
        label = np.searchsorted(thresholds, z)
        if ts is None:
            ts = _timestamps(counts[lo:hi], crng)  # grouped by user like the pairs, random within
        table = pa.table(  # pairs come sorted by (user, film) = (userId, movieId), as GroupLens
            {
                "userId": (user + 1).astype(np.int32),
                "movieId": cat.movie_ids[film],
                "rating": RATING_LABELS.take(pa.array(label)),
                "timestamp": ts,
            }
        )
        append_csv(ratings_path, table)
        is_tag = tagger[user] & (crng.random(user.size) < tag_share)
        if is_tag.any():
            tag_ts = np.minimum(ts[is_tag] + crng.integers(0, 3_600, int(is_tag.sum())), T_END)
            append_csv(
                tags_path,
                pa.table(
                    {
                        "userId": (user[is_tag] + 1).astype(np.int32),
                        "movieId": cat.movie_ids[film[is_tag]],
                        "tag": tag_vocabulary[crng.integers(0, tag_vocabulary.size, int(is_tag.sum()))],
                        "timestamp": tag_ts,
                    }
                ),
            )
        progress.add(user.size)
    progress.done()
    log.info("%d users written to %s", shape.users, out)
    return shape
