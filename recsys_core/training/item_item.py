"""Fit the item-item term in closed form: EASE or EDLAE on liked (or all) ratings, pruned.

EASE / EDLAE (``recsys_core.models.ease``) is fitted on the binary users x films matrix of
the term's input (liked ratings, or every rating), restricted to the ``max_films`` films
with the most such entries: its inversion is cubic in the number of
films, so ``max_films`` caps it (at 20,000 films the cap keeps the films that hold nearly
all liked ratings of the full release). Each film keeps its ``k`` largest |B| weights, so
scoring costs ``k`` adds per liked film instead of a dense films x films product.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from recsys_core.data.csr import RatingsCSR
from recsys_core.models.ease import ease_weights, gram
from recsys_core.models.user_ae import ITEM_FEEDBACK

log = logging.getLogger(__name__)


@dataclass
class ItemItemConfig:
    l2: float = 200.0  # EASE's ridge penalty (its lambda): the search's first point
    max_films: int = 20_000  # the most-liked films that get item-item weights
    # blend weights tried on the validation users (0: the AE alone); the best NDCG@10 wins
    blends: tuple[float, ...] = (0.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)
    # The search over the term's input and penalty (``search_item_item``), each point one
    # closed-form fit scored alone on the validation users: the input feedback (the first
    # is the search's first point), lambdas beside ``l2``, EDLAE dropouts (0 is EASE) ...
    feedbacks: tuple[str, ...] = ("liked", "all")
    l2s: tuple[float, ...] = (50.0, 800.0)
    dropouts: tuple[float, ...] = (0.1, 0.25, 0.5)
    # ... and, after the AE's epochs, the recency half-lives (in ratings) of the term's
    # input tried with the blend (no decay is always tried first)
    half_lives: tuple[float, ...] = (5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
    # the search skips a point whose predicted cost (its Gram, if not built, and its fit)
    # would take it past this share of max_minutes (each fit's cost is cubic in the films:
    # milliseconds at 2,000 films, minutes at 20,000 on 2 CPU cores, so small data gets the
    # whole search and the full release the points on its first Gram that fit)
    search_share: float = 0.3

    def validate(self) -> None:
        """Raises ValueError naming the first setting out of range."""
        if not (self.l2 > 0 and all(lam > 0 for lam in self.l2s)):
            raise ValueError(f"item-item lambdas must be > 0, got l2 {self.l2} and l2s {self.l2s}")
        if self.max_films < 0 or not self.blends or min(self.blends) < 0:
            raise ValueError(f"item-item max_films must be >= 0 and blends non-empty and >= 0, got {self}")
        if not self.feedbacks or not set(self.feedbacks) <= set(ITEM_FEEDBACK):
            raise ValueError(f"item-item feedbacks must be among {ITEM_FEEDBACK}, got {self.feedbacks}")
        if not all(0 < p < 1 for p in self.dropouts) or not all(h > 0 for h in self.half_lives):
            raise ValueError(f"item-item dropouts must be in (0, 1) and half-lives > 0, got {self}")
        if not 0 <= self.search_share <= 1:
            raise ValueError(f"item-item search_share must be in [0, 1], got {self.search_share}")


@dataclass(frozen=True)
class ItemItemPoint:
    """One setting of the term's closed form: its input feedback, lambda and EDLAE dropout."""

    feedback: str = "liked"
    l2: float = 200.0
    dropout: float = 0.0


@dataclass
class ItemItemFit:
    index: torch.Tensor  # (n_films, k) int64 target film of each weight
    weight: torch.Tensor  # (n_films, k) float32, 0 for films outside the fitted set
    films: int  # films in the fitted set
    seconds: float
    gram_seconds: float = 0.0  # of ``seconds``: building X^T X (the rest: inversion, top-k)
    point: ItemItemPoint = ItemItemPoint()


def most_liked_films(liked: RatingsCSR, max_films: int) -> np.ndarray:
    """Sorted film indices of the (at most) ``max_films`` films with the most likes (>= 1)."""
    counts = liked.film_counts()
    ranked = np.lexsort((np.arange(liked.n_films), -counts))
    return np.sort(ranked[: kept_films(counts, max_films)])


def fitted_films(data: RatingsCSR, max_films: int) -> int:
    """How many films ``most_liked_films(data, max_films)`` returns (without ranking them)."""
    return kept_films(data.film_counts(), max_films)


def kept_films(counts: np.ndarray, max_films: int) -> int:
    """Films with at least one entry (of (n_films,) ``counts``), at most ``max_films``."""
    return min(max_films, int(np.count_nonzero(counts)))


def strongest(b: torch.Tensor, k: int, block: int = 2048) -> torch.Tensor:
    """(rows, k) column indices of each row's ``k`` largest |weights| (in row blocks: no |B| copy)."""
    return torch.cat([torch.topk(b[lo : lo + block].abs(), k, dim=1).indices for lo in range(0, b.shape[0], block)])


def feedback_csr(csr: RatingsCSR, feedback: str, liked_rating: float) -> RatingsCSR:
    """The entries that are the term's input: the liked ratings, or every rating ("all")."""
    return csr.liked(liked_rating) if feedback == "liked" else csr


@dataclass
class GramOf:
    """The Gram matrix of one feedback's entries on its fitted films (built once, solved often)."""

    films: np.ndarray  # (m,) sorted film indices of the fitted set
    g: torch.Tensor  # (m, m) float32 on the fit's device
    seconds: float


def build_gram(csr: RatingsCSR, feedback: str, max_films: int, liked_rating: float, device: torch.device | str) -> GramOf:
    t0 = time.monotonic()
    data = feedback_csr(csr, feedback, liked_rating)
    films = most_liked_films(data, max_films)
    log.info("item-item term: Gram matrix of the %d most-%s films (%d entries)", len(films),
             "liked" if feedback == "liked" else "rated", len(data.indices))  # fmt: skip
    g = gram(data, films).to(device) if len(films) >= 2 else torch.zeros((len(films), len(films)))
    return GramOf(films, g, time.monotonic() - t0)


def solve(gram_of: GramOf, n_films: int, k: int, point: ItemItemPoint) -> ItemItemFit:
    """The pruned weights of ``point`` from a built Gram: ``k`` strongest per fitted film."""
    t0 = time.monotonic()
    index = torch.zeros((n_films, k), dtype=torch.int64)
    weight = torch.zeros((n_films, k), dtype=torch.float32)
    films = gram_of.films
    if k == 0 or len(films) < 2:
        return ItemItemFit(index, weight, len(films), time.monotonic() - t0, point=point)
    b = ease_weights(gram_of.g, point.l2, point.dropout).cpu()
    kept = min(k, len(films) - 1)
    top = strongest(b, kept)
    rows = torch.from_numpy(films)
    index[rows, :kept] = rows[top]
    weight[rows, :kept] = b.gather(1, top)
    seconds = time.monotonic() - t0
    log.info("item-item term: %d films x %d weights, %s input, l2 %g, dropout %g: %.1fs", len(films), kept,
             point.feedback, point.l2, point.dropout, seconds)  # fmt: skip
    return ItemItemFit(index, weight, len(films), seconds, gram_of.seconds, point)


def fit_item_item(csr: RatingsCSR, k: int, config: ItemItemConfig, liked_rating: float,
                  device: torch.device | str = "cpu", point: ItemItemPoint | None = None) -> ItemItemFit:  # fmt: skip
    """Pruned EASE / EDLAE weights of every film of ``csr`` (zeros outside the fitted set).

    ``k``: weights kept per film; ``point``: input feedback, lambda and dropout (None: liked
    ratings, ``config.l2``, no dropout). The inversion runs on ``device`` (seconds on a GPU;
    minutes on 2 CPU cores at 20,000 films).
    """
    point = point or ItemItemPoint("liked", config.l2, 0.0)
    gram_of = build_gram(csr, point.feedback, config.max_films, liked_rating, device)
    fit = solve(gram_of, csr.n_films, k, point)
    fit.seconds += gram_of.seconds
    return fit
