"""Fit the item-item term in closed form: EASE (Steck 2019) on liked ratings, pruned.

For the ``max_films`` most-liked films, ``B = argmin ||X - XB||^2 + l2 ||B||^2`` with a zero
diagonal has the closed form ``B = -P / diag(P)`` (off the diagonal), ``P = (X^T X + l2 I)^-1``,
``X`` the users x films matrix of liked ratings. Each film keeps its ``k`` largest |B| weights,
so scoring costs ``k`` adds per liked film instead of a dense films x films product.

The Gram matrix ``X^T X`` is built in blocks of films as sparse products (films x users) @
(users x films): the full release never materializes a dense users x films matrix. Its cost
is the inversion, cubic in ``max_films``, so ``max_films`` caps it (at 20,000 films the cap
keeps the films that hold nearly all liked ratings of the full release).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from recsys_core.training.data import RatingsCSR

log = logging.getLogger(__name__)
DOUBLE_MAX_FILMS = 12_000  # invert in float64 up to this many films, float32 above (memory)


@dataclass
class ItemItemConfig:
    l2: float = 200.0  # EASE's ridge penalty (its lambda)
    max_films: int = 20_000  # the most-liked films that get item-item weights
    # blend weights tried on the validation users (0: the AE alone); the best NDCG@10 wins
    blends: tuple[float, ...] = (0.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0)


@dataclass
class ItemItemFit:
    index: torch.Tensor  # (n_films, k) int64 target film of each weight
    weight: torch.Tensor  # (n_films, k) float32, 0 for films outside the fitted set
    films: int  # films in the fitted set
    seconds: float
    gram_seconds: float = 0.0  # of ``seconds``: building X^T X (the rest: inversion, top-k)


def most_liked_films(liked: RatingsCSR, max_films: int) -> np.ndarray:
    """Sorted film indices of the (at most) ``max_films`` films with the most likes (>= 1)."""
    counts = np.bincount(liked.indices, minlength=liked.n_films)
    ranked = np.lexsort((np.arange(liked.n_films), -counts))
    return np.sort(ranked[: min(max_films, int((counts > 0).sum()))])


def gram(liked: RatingsCSR, films: np.ndarray, block: int = 2048) -> torch.Tensor:
    """(len(films), len(films)) float32 co-like counts ``X^T X`` restricted to ``films``."""
    column = np.full(liked.n_films, -1, dtype=np.int64)
    column[films] = np.arange(len(films))
    cols = column[liked.indices]
    keep = cols >= 0
    users, cols = liked.entry_rows()[keep], cols[keep]
    m = len(films)
    by_user_ptr = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=liked.n_users))])
    order = np.argsort(cols, kind="stable")
    by_film_ptr = np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=m))])
    by_film_users = users[order]
    out = torch.zeros((m, m), dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        by_user = torch.sparse_csr_tensor(torch.from_numpy(by_user_ptr), torch.from_numpy(cols),
                                          torch.ones(len(cols)), (liked.n_users, m), check_invariants=False)  # fmt: skip
        for lo in range(0, m, block):
            hi = min(lo + block, m)
            ptr = torch.from_numpy(by_film_ptr[lo : hi + 1] - by_film_ptr[lo])
            part_users = torch.from_numpy(by_film_users[by_film_ptr[lo] : by_film_ptr[hi]])
            part = torch.sparse_csr_tensor(ptr, part_users, torch.ones(len(part_users)), (hi - lo, liked.n_users),
                                           check_invariants=False)  # fmt: skip
            out[lo:hi] = (part @ by_user).to_dense()
    return out


def ease_weights(g: torch.Tensor, l2: float) -> torch.Tensor:
    """Dense EASE weights ``B`` (zero diagonal) from the Gram matrix ``g``.

    ``g`` may be overwritten (at 20,000 films each copy is 1.6 GB).
    """
    dtype = torch.float64 if g.shape[0] <= DOUBLE_MAX_FILMS else torch.float32
    p = g.to(dtype)
    p.diagonal().add_(l2)
    p = torch.linalg.inv(p)
    b = p.div_(-torch.diagonal(p).clone()[None, :])
    b.fill_diagonal_(0.0)
    return b.float()


def strongest(b: torch.Tensor, k: int, block: int = 2048) -> torch.Tensor:
    """(rows, k) column indices of each row's ``k`` largest |weights| (in row blocks: no |B| copy)."""
    return torch.cat([torch.topk(b[lo : lo + block].abs(), k, dim=1).indices for lo in range(0, b.shape[0], block)])


def fit_item_item(csr: RatingsCSR, k: int, config: ItemItemConfig, liked_rating: float,
                  device: torch.device | str = "cpu") -> ItemItemFit:  # fmt: skip
    """Pruned EASE weights of every film (zeros for films outside the most-liked set).

    The inversion runs on ``device`` (seconds on a GPU; minutes on 2 CPU cores at 20,000 films).
    """
    t0 = time.monotonic()
    index = torch.zeros((csr.n_films, k), dtype=torch.int64)
    weight = torch.zeros((csr.n_films, k), dtype=torch.float32)
    liked = csr.select_entries(csr.ratings >= liked_rating)
    films = most_liked_films(liked, config.max_films)
    if k == 0 or len(films) < 2:
        return ItemItemFit(index, weight, len(films), time.monotonic() - t0)
    log.info("item-item term: Gram matrix of the %d most-liked films (%d liked ratings)", len(films), len(liked.indices))
    g = gram(liked, films).to(device)
    t_gram = time.monotonic() - t0
    log.info("item-item term: Gram %.1fs; inverting %d x %d on %s", t_gram, len(films), len(films), device)
    b = ease_weights(g, config.l2).cpu()
    del g
    kept = min(k, len(films) - 1)
    top = strongest(b, kept)
    rows = torch.from_numpy(films)
    index[rows, :kept] = rows[top]
    weight[rows, :kept] = b.gather(1, top)
    seconds = time.monotonic() - t0
    log.info("item-item term: %d films x %d weights, l2 %.0f; gram %.1fs, total %.1fs",
             len(films), kept, config.l2, t_gram, seconds)  # fmt: skip
    return ItemItemFit(index, weight, len(films), seconds, t_gram)
