"""EASE (Steck 2019, "Embarrassingly Shallow Autoencoders for Sparse Data"), in one place.

``B = argmin ||X - XB||^2 + l2 ||B||^2`` subject to ``diag(B) = 0`` has the closed form
``B = -P / diag(P)`` off the diagonal, ``P = (X^T X + l2 I)^-1``, for a users x films binary
matrix ``X``. The nightly item-item term (``recsys_core.training.item_item``) prunes this
``B``; the evaluation's EASE and item-kNN baselines (``recsys_core.evaluation.baselines``)
build on the same Gram matrix and precision matrix (the EASE family, EDLAE and DLAE
included, in ``recsys_core.evaluation.baselines_linear``).

The Gram matrix ``X^T X`` is built in blocks of films as sparse products (films x users) @
(users x films): the full release never materializes a dense users x films matrix. The
inversion is cubic in the number of films.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from recsys_core.data.csr import RatingsCSR
from recsys_core.device import torch_threads

DOUBLE_MAX_FILMS = 12_000  # invert in float64 up to this many films, float32 above (memory)


def gram(csr: RatingsCSR, films: np.ndarray | None = None, block: int = 512) -> torch.Tensor:
    """(m, m) float32 co-occurrence counts ``X^T X`` of ``csr``'s entries restricted to ``films``.

    Built ``block`` films at a time: each block's sparse product holds up to block x m
    entries with their indices while it is made dense. At 20,000 films and every rating of
    the full release, blocks of 2,048 peaked at 11.9 GiB RSS in the build, blocks of 512 at
    8.2 GiB, in the same time (~54 s).

    ``films``: (m,) sorted film indices (None: every film, m = ``csr.n_films``); row and
    column ``i`` of the result are ``films[i]``. Counts are exact below 2^24 users.

    Memory the process does not get back: torch 2.13's CPU sparse CSR @ sparse CSR (MKL)
    keeps ~8 bytes per entry of each product after it is freed (measured: 70 MB per block of
    512 x 20,000; ~1.7 GB per build of the full release's liked Gram, freed or not). torch's
    own COO product does not, but took 4x as long, so the nightly search builds each Gram
    once per run of points on it (``recsys_core.training.item_search``).
    """
    films = np.arange(csr.n_films) if films is None else np.asarray(films)
    m = len(films)
    # int32 indices where they fit: at every rating of the full release the entry-sized
    # arrays below take ~0.5 GB in int32 against ~1.3 GB in int64
    index = np.int32 if max(len(csr.indices), csr.n_users, m) < 2**31 else np.int64
    column = np.full(csr.n_films, -1, dtype=index)
    column[films] = np.arange(m, dtype=index)
    cols = column[csr.indices]
    keep = cols >= 0
    users = csr.entry_rows(index)[keep]
    cols = cols[keep]
    del keep
    by_user_ptr = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=csr.n_users))]).astype(index)
    by_film_ptr = np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=m))])
    by_film_users = users[np.argsort(cols, kind="stable")]
    del users
    out = torch.zeros((m, m), dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        by_user = torch.sparse_csr_tensor(torch.from_numpy(by_user_ptr), torch.from_numpy(cols),
                                          torch.ones(len(cols)), (csr.n_users, m), check_invariants=False)  # fmt: skip
        for lo in range(0, m, block):
            hi = min(lo + block, m)
            ptr = torch.from_numpy((by_film_ptr[lo : hi + 1] - by_film_ptr[lo]).astype(index))
            part_users = torch.from_numpy(by_film_users[by_film_ptr[lo] : by_film_ptr[hi]])
            part = torch.sparse_csr_tensor(ptr, part_users, torch.ones(len(part_users)), (hi - lo, csr.n_users),
                                           check_invariants=False)  # fmt: skip
            out[lo:hi] = (part @ by_user).to_dense()
    return out


def precision_matrix(g: torch.Tensor, l2: float | torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``P = (g + diagMat(l2))^-1`` of the (m, m) Gram matrix ``g``; ``g`` is left as it was.

    ``l2``: a scalar ridge penalty or an (m,) diagonal penalty. ``dtype`` None: float64 up
    to ``DOUBLE_MAX_FILMS`` films, float32 above (at 20,000 films each float32 copy is 1.6
    GB, so ``g`` of that dtype gets the penalty in place and its diagonal back afterwards
    rather than a copy). ``g`` must be symmetric (a Gram; only its lower triangle is read).
    Raises torch.linalg.LinAlgError if singular, ValueError if ``g`` or the penalty is not
    finite.
    """
    if dtype is None:
        dtype = torch.float64 if g.shape[0] <= DOUBLE_MAX_FILMS else torch.float32
    p = g.to(dtype)
    diagonal = p.diagonal().clone() if p.data_ptr() == g.data_ptr() else None
    p.diagonal().add_(torch.as_tensor(l2, dtype=torch.float64).to(dtype))
    try:
        return _inverse_spd(p)
    finally:
        if diagonal is not None:
            p.diagonal().copy_(diagonal)


def _inverse_spd(p: torch.Tensor) -> torch.Tensor:
    """The inverse of the symmetric positive definite ``p`` through its Cholesky factor
    (only the lower triangle of ``p`` is read: ``p`` must be symmetric, as a Gram is).

    Less arithmetic than ``torch.linalg.inv``'s LU route (n^3 against 2n^3 flops) and one
    n x n matrix beside ``p`` instead of two: the factor is inverted in place (LAPACK's
    potri; 1.6 GB less at 20,000 films in float32). Measured at 20,000 films, float32, 2
    cores, quiet: factor 13.6 s + inverse 57.8 s on one thread, against 106.8 s for LU.
    The in-place inverse runs on one thread: on two, torch's potri was 2x faster when the
    machine was idle but 3x to 100x slower than one thread when other processes held the
    cores (its many small synchronised steps wait on descheduled threads), and a nightly
    machine is rarely idle. Where the factor fails in the precision at hand (a Gram so
    ill-conditioned in float32 that a pivot turns <= 0), LU is used; a non-finite ``p``
    raises ValueError rather than inverting to NaN.
    """
    factor, info = torch.linalg.cholesky_ex(p)
    if int(info.max()) == 0:
        with torch_threads(1):
            return torch.cholesky_inverse(factor, out=factor)
    del factor
    if not bool(torch.isfinite(p).all()):
        raise ValueError("the Gram matrix plus its penalty has non-finite entries (NaN or inf): cannot invert")
    return torch.linalg.inv(p)


def dropout_penalty(counts: torch.Tensor, lam: float, p: float) -> torch.Tensor:
    """(n_films,) float64 diagonal of ``Lambda = lambda I + p / (1 - p) diagMat(diag(X^T X))``.

    ``counts``: (n_films,) ``diag(X^T X)``, each film's number of entries. Steck 2020,
    "Autoencoders that don't overfit towards the identity" (NeurIPS): the penalty that input
    dropout of rate ``p`` induces, with full emphasis on the dropped entries (EDLAE); ``p = 0``
    is EASE's ``lambda I``. Raises ValueError unless ``lam > 0`` and ``0 <= p < 1``.
    """
    if not lam > 0:
        raise ValueError(f"lambda must be > 0, got {lam}")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout p must be in [0, 1), got {p}")
    return lam + (p / (1.0 - p)) * counts.to(torch.float64)


def ease_weights(g: torch.Tensor, l2: float, dropout: float = 0.0) -> torch.Tensor:
    """(m, m) float32 weights ``B = -P / diag(P)`` with a zero diagonal, from the (m, m) Gram
    ``g`` (left unchanged).

    ``dropout`` 0: EASE, ``P = (g + l2 I)^-1``; ``dropout`` p > 0: EDLAE (Steck 2020), ``P =
    (g + Lambda)^-1`` with ``Lambda = dropout_penalty(diag(g), l2, p)``. Raises ValueError
    for ``l2 <= 0`` or ``dropout`` outside [0, 1).
    """
    p = precision_matrix(g, dropout_penalty(torch.diagonal(g), l2, dropout))
    b = p.div_(-torch.diagonal(p).clone()[None, :])
    b.fill_diagonal_(0.0)
    return b.float()
