"""Time in a synthetic drop: films released over the years, taste that drifts, sparse users.

``recsys_core.data.generator.generate(..., temporal=TemporalShape(...))`` (``recsys generate
--temporal`` / ``--release-driven``) draws each user's ratings along a timeline instead of
all at once; without ``temporal`` (the default) nothing here is used but ``user_times``,
and a given (scale, seed) writes the same bytes as before.

The model, per rating of a user at time ``t`` (the user's own times are drawn first: one
session of about an hour, or a window of days to years, as in MovieLens):

- **Release.** A film whose title year is 1995 or later is released at a uniform moment of
  that year; older films are the back catalogue, there from the start. A film is never
  rated before its release. The title years are the time-free generator's draws, handed
  out so that every stretch of time gets its share of popular films (``spread_years``).
  A film's draw weight at ``t`` is ``p(f) + release_boost * q(f) * exp(-(t - release) /
  release_decay_days)``: its row's weight ``p`` (popularity tilted by taste, summing to 1
  over the films) plus a release burst that decays into the back catalogue, where ``q`` is
  ``p ** 0.5`` normalised the same way (a release is news even for a small film, so the
  burst is less heavy-tailed than popularity). Both parts are prefix sums over the films
  in release order (the films out at ``t`` are a prefix), so a draw is two binary searches
  whatever the time, with no time bins.
- **Drift.** Besides their own segment, each user has a current interest that moves along
  their history: it changes at each rating (in time order) with probability
  ``1 / drift_every``, to one of ``N_INTERESTS`` interests at random (narrower than a
  segment: popularity tilted ``interest_tilt`` toward a random taste direction). A share
  ``drift_weight`` of their picks come from the current interest, the rest from their own
  segment, and their taste (which sets the stars) is the same mix of the two centres; so
  a user's latest ratings are closest to their latest taste, as in MovieLens, where EASE
  fed only the latest quarter of a user's history finds 1.55x the next films that the
  oldest quarter finds (bench/RESULTS.md).
- **Shape.** ``users_factor`` multiplies the users; ``ratings_per_user`` (when set) fixes
  the mean number of ratings per user, with a log-normal spread of ``activity_sigma``:
  ``release_driven()`` is a sparse service where most users rate a handful of films and
  most ratings are of films out for less than a year.

Each user rates a film at most once: a duplicate draw is redrawn from the same weights
(a random one of the equal draws stays), which is sampling without replacement, for up to
``REDRAW_ROUNDS`` rounds; what is still short (users who exhaust a narrow interest) takes
an exact weighted sample without replacement per (user, row, quarter-year). The cost is
linear in the ratings plus that fallback (a scale-0.02 drop in ~20 s), meant for
evaluation-sized drops rather than the full-scale one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np

from recsys_core.data.synthetic_shape import T_END, T_START, Catalogue, Shape

DAY = 86_400.0
GROUP_SECONDS = 91 * DAY  # the exact fallback's time resolution
REDRAW_ROUNDS = 12
N_INTERESTS = 96
BURST_TEMPER = 0.5


def user_times(counts: np.ndarray, rng: np.random.Generator, one_day_share: float = 0.45) -> np.ndarray:
    """Per rating, a time inside its user's active window (sessions of hours to years),
    grouped by user (``counts[u]`` each), random within a user."""
    n = counts.size
    span_total = T_END - T_START
    one_day = rng.random(n) < one_day_share
    span = np.where(
        one_day,
        rng.exponential(3_600.0, n),
        np.minimum(rng.lognormal(math.log(200 * 86_400.0), 1.6, n), span_total),
    )
    start_frac = np.where(rng.random(n) < 0.7, rng.beta(1.6, 1.0, n), rng.random(n))
    start = T_START + start_frac * (span_total - span)
    per_rating_user = np.repeat(np.arange(n), counts)
    ts = start[per_rating_user] + rng.random(per_rating_user.size) * span[per_rating_user]
    return np.clip(ts, T_START, T_END).astype(np.int64)


@dataclass(frozen=True)
class TemporalShape:
    """How time shapes a generated drop (see the module docstring). The defaults are
    ``movielens()``: roughly the effects measured on ml-latest-small (bench/RESULTS.md)."""

    release_boost: float = 0.5  # weight of the release burst (module docstring); 0: none
    release_decay_days: float = 365.0  # e-folding time of the release burst
    drift_weight: float = 0.9  # share of picks from the user's current (moving) interest
    drift_every: float = 30.0  # mean ratings between two moves of the current interest
    interest_tilt: float = 10.0  # how narrow an interest is (a segment's tilt is 3.5)
    one_day_share: float = 0.6  # users who rate everything in one session (ml-latest-small: 59%)
    users_factor: float = 1.0
    ratings_per_user: float | None = None  # None: the MovieLens activity (median ~30)
    activity_sigma: float = 1.55  # log-normal spread of ratings per user

    def __post_init__(self) -> None:
        if not self.release_boost >= 0:
            raise ValueError(f"release_boost must be >= 0, got {self.release_boost}")
        if not (T_END - T_START) / DAY / 600 <= self.release_decay_days:
            raise ValueError(f"release_decay_days must be >= 15, got {self.release_decay_days}")
        if not 0 <= self.drift_weight <= 1 or not 0 <= self.one_day_share <= 1:
            raise ValueError("drift_weight and one_day_share must be in [0, 1]")
        if not self.drift_every >= 1:
            raise ValueError(f"drift_every must be >= 1 (ratings), got {self.drift_every}")
        if not self.users_factor > 0 or not self.activity_sigma > 0:
            raise ValueError("users_factor and activity_sigma must be > 0")
        if self.ratings_per_user is not None and not self.ratings_per_user >= 1:
            raise ValueError(f"ratings_per_user must be >= 1, got {self.ratings_per_user}")

    @classmethod
    def movielens(cls) -> TemporalShape:
        """MovieLens-like (ml-latest-small, bench/RESULTS.md): about a fifth of a film's later
        ratings within a year of its first, later ratings closer to later taste (EASE from the
        latest quarter finds ~1.5x what the oldest finds), 60% of users in one session."""
        return cls()

    @classmethod
    def release_driven(cls) -> TemporalShape:
        """A sparse, release-driven service: three times the users, ~6 ratings each
        (median ~3), most ratings of films out for less than a year."""
        return cls(release_boost=1000.0, release_decay_days=60.0, one_day_share=0.25,
                   users_factor=3.0, ratings_per_user=6.0, activity_sigma=1.1)  # fmt: skip

    def reshape(self, shape: Shape) -> Shape:
        """``shape`` with this one's users and ratings (films and genome unchanged)."""
        if self.users_factor == 1.0 and self.ratings_per_user is None:
            return shape
        users = max(20, round(shape.users * self.users_factor))
        ratings = round(users * self.ratings_per_user) if self.ratings_per_user else round(
            shape.ratings * users / shape.users)  # fmt: skip
        ratings = max(users, min(ratings, users * shape.films // 3))
        tags = round(shape.tag_applications * ratings / max(shape.ratings, 1))
        return replace(shape, users=users, ratings=ratings, tag_applications=tags)


def spread_years(years: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """``years`` handed out again among the films of 1995 on so that every stretch of time
    gets its share of popular films (a golden-ratio sequence over the films by popularity):
    with heavy-tailed popularity and a small catalogue, random years would leave whole years
    without a hit and others with several. Older films keep theirs."""
    first = datetime.fromtimestamp(T_START, UTC).year
    recent = np.flatnonzero(years >= first)
    by_popularity = recent[np.argsort(-popularity[recent], kind="stable")]
    slot = np.argsort(np.argsort(np.modf(np.arange(recent.size) * 0.6180339887498949)[0]))
    out = years.copy()
    out[by_popularity] = np.sort(years[recent])[slot]
    return out


def release_times(years: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(films,) float64 release time (epoch seconds): a uniform moment of the title year for
    films of 1995 on, -inf for the back catalogue."""
    first = datetime.fromtimestamp(T_START, UTC).year
    start = np.array([datetime(int(y), 1, 1, tzinfo=UTC).timestamp() for y in np.maximum(years, first)])
    moment = start + rng.random(years.size) * 365 * DAY
    return np.where(years >= first, moment, -np.inf)


class Timeline:
    """Draws one chunk of users' (film, time) pairs with releases and drift."""

    def __init__(self, temporal: TemporalShape, cat: Catalogue, years: np.ndarray,
                 segments: np.ndarray, seed: int):  # fmt: skip
        self.t = temporal
        self.cat = cat
        self.release = release_times(years, np.random.default_rng([seed, 20]))
        self.order = np.argsort(self.release, kind="stable")  # films in release order
        self.sorted_release = self.release[self.order]
        n_segments = cat.centres.shape[0]
        self.home = segments
        # interests: narrower than a segment (a stronger tilt), rows after the segments' rows
        rng = np.random.default_rng([seed, 22])
        self.centres = np.vstack([cat.centres, rng.normal(0, 1, (N_INTERESTS, cat.centres.shape[1]))])
        self.interest_rows = n_segments + np.arange(N_INTERESTS)
        tilt = temporal.interest_tilt * (self.centres[n_segments:] @ cat.latent.T).astype(np.float64)
        tilt -= tilt.max(axis=0, keepdims=True)
        tilt -= np.log(np.exp(tilt).mean(axis=0, keepdims=True))  # each film keeps its popularity on average
        logits = np.vstack([cat.segment_logp[:n_segments], np.log(cat.popularity)[None, :] + tilt])
        self.logp = logits - np.log(np.exp(logits - logits.max(axis=1, keepdims=True)).sum(axis=1, keepdims=True)) \
            - logits.max(axis=1, keepdims=True)
        # per row, prefix sums in release order: the back-catalogue part p(f) and the burst
        # part q(f) exp((release - T_END) / decay) (0 for the back catalogue), where q is p
        # tempered (p ** BURST_TEMPER, normalised): a release is news even for a small film
        self.p = np.exp(self.logp)
        self.q = np.exp(BURST_TEMPER * self.logp)
        self.q /= self.q.sum(axis=1, keepdims=True)
        self.tau = temporal.release_decay_days * DAY
        burst = np.where(np.isfinite(self.sorted_release), np.exp((self.sorted_release - T_END) / self.tau), 0.0)
        self.cum_base = np.cumsum(self.p[:, self.order], axis=1)
        self.cum_burst = np.cumsum(self.q[:, self.order] * burst, axis=1)

    def _draw(self, row: np.ndarray, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A film index per slot, drawn from its row's weights at its time: the back-catalogue
        part or the burst part (in proportion to their masses), then a film of that part."""
        k = np.searchsorted(self.sorted_release, t, side="right")  # films out at t: a prefix
        last = np.maximum(k - 1, 0)
        base = np.where(k > 0, self.cum_base[row, last], 0.0)
        burst = np.where(k > 0, self.cum_burst[row, last], 0.0)
        scale = self.t.release_boost * np.exp((T_END - t) / self.tau)
        use_burst = rng.random(row.size) * (base + burst * scale) < burst * scale
        target = rng.random(row.size) * np.where(use_burst, burst, base)
        pos = np.zeros(row.size, dtype=np.int64)
        for r in np.unique(row):
            for flag, cum in ((False, self.cum_base), (True, self.cum_burst)):
                m = (row == r) & (use_burst == flag)
                if m.any():
                    pos[m] = np.searchsorted(cum[r], target[m], side="right")
        return self.order[np.minimum(pos, last)]

    def weights_at(self, row: int, t: float) -> np.ndarray:
        """(films,) unnormalised draw weights of one segment row at time t."""
        age = t - self.release
        burst = np.where(np.isfinite(self.release), np.exp(-np.maximum(age, 0.0) / self.tau), 0.0)
        return np.where(age >= 0, self.p[row] + self.t.release_boost * self.q[row] * burst, 0.0)

    def chunk(self, users: np.ndarray, counts: np.ndarray, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
        """(local user, film, timestamp, taste centre) of ``users`` (global indices) with
        ``counts`` ratings each, sorted by (user, film)."""
        n_films = self.cat.movie_ids.size
        ts = user_times(counts, rng, self.t.one_day_share).astype(np.float64)
        owner = np.repeat(np.arange(users.size), counts)
        ts = ts[np.lexsort((ts, owner))]  # each user's times in order
        moves = rng.random(owner.size) < 1.0 / self.t.drift_every
        moves[np.cumsum(counts)[counts > 0] - counts[counts > 0]] = True  # each user's first rating
        interest = self.interest_rows[rng.integers(0, N_INTERESTS, int(moves.sum()))][np.cumsum(moves) - 1]
        home = self.home[users][owner]
        row = np.where(rng.random(owner.size) < self.t.drift_weight, interest, home)

        film = np.full(owner.size, -1, dtype=np.int64)
        todo = np.arange(owner.size)
        for _round in range(REDRAW_ROUNDS):
            if todo.size == 0:
                break
            film[todo] = self._draw(row[todo], ts[todo], rng)
            drawn = np.flatnonzero(film >= 0)
            key = owner[drawn] * n_films + film[drawn]
            by_key = np.lexsort((rng.random(drawn.size), key))  # a random one of equal draws stays
            dup = np.zeros(drawn.size, dtype=bool)
            dup[by_key[1:]] = key[by_key[1:]] == key[by_key[:-1]]
            todo = drawn[dup]
            film[todo] = -1
        self._exact(np.flatnonzero(film < 0), owner, row, ts, film, rng)
        rho = self.t.drift_weight
        taste = (1 - rho) * self.centres[home] + rho * self.centres[interest]
        order = np.lexsort((film, owner))
        return owner[order], film[order], ts[order].astype(np.int64), taste[order].astype(np.float32)

    def _exact(self, slots: np.ndarray, owner: np.ndarray, row: np.ndarray, ts: np.ndarray,
               film: np.ndarray, rng: np.random.Generator) -> None:  # fmt: skip
        """Fill ``slots`` with films their users have not rated: a weighted sample without
        replacement per (user, row, quarter-year), weights at the group's latest time; a
        film released after a slot's time moves the slot to just after the release."""
        if slots.size == 0:
            return
        group = (ts[slots] - T_START) // GROUP_SECONDS
        order = np.lexsort((ts[slots], group, row[slots], owner[slots]))
        slots = slots[order]
        keys = np.stack([owner[slots], row[slots], group[order]], axis=1)
        cuts = np.flatnonzero(np.any(keys[1:] != keys[:-1], axis=1)) + 1
        bounds = np.searchsorted(owner, np.arange(owner[-1] + 2))  # owner is sorted
        for part in np.split(slots, cuts):
            u, r = owner[part[0]], row[part[0]]
            weights = self.weights_at(r, ts[part[-1]])
            rated = film[bounds[u] : bounds[u + 1]]
            weights[rated[rated >= 0]] = 0.0
            if (weights > 0).sum() < part.size:  # too few out yet: any film released by T_END
                late = (self.release <= T_END) & (weights == 0)
                late[rated[rated >= 0]] = False
                weights[late] = 1e-12
            score = np.log(np.maximum(weights, 1e-300)) + rng.gumbel(size=weights.size)
            score[weights == 0] = -np.inf
            film[part] = rng.permutation(np.argsort(-score)[: part.size])  # slots in random order
            released = self.release[film[part]]
            ts[part] = np.where(released > ts[part], np.minimum(released + rng.random(part.size) * DAY, T_END),
                                ts[part])  # fmt: skip
