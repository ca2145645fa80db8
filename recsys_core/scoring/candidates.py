"""Top-N from a fast approximate score, proved equal to the reference ranking user by user.

The reference score (``recsys_core.scoring.reference``) is an fp32 dot product in a fixed
order: exact and device-independent, but elementwise passes over a users x films x D tensor.
A BLAS matrix product computes the same sum in one fast pass, in another order. So, per
batch of users:

1. approximate scores ``y = A + term`` for every film, ``A`` the fp32 BLAS product of the
   user with the films' vectors and bias (numpy's OpenBLAS on the CPU: about 3x torch's MKL
   product on this AMD CPU, see bench/RESULTS.md; torch at full fp32 precision on CUDA);
   seen films ``-inf``;
2. the ``k = n + margin`` films of highest ``y`` are the candidates; ``tau`` is the highest
   ``y`` outside them (the (k+1)-th), both found through block maxima (``best_approximate``);
3. the candidates get their reference score ``r`` and are ranked by it (ties by film_idx);
4. the user's list is certified when every film outside the candidates provably scores
   below the n-th reference score ``r_n``: ``tau + eps < r_n`` (``score_error_bound``), or
   is seen. Otherwise (ties across the cut, NaN, sums that overflow or could) the user is
   ranked by ``reference.exact_top_n``, as the exact path ranks every user.

A certified list is the reference ranking: a film outside the candidates has reference
score ``<= tau + eps < r_n``, so it can neither enter the top n nor tie with it.
"""

from __future__ import annotations

import numpy as np
import torch

from recsys_core.scoring.reference import exact_top_n, reference_scores

UNIT_ROUNDOFF = 2.0**-24  # binary32, round to nearest
BOUND_SLACK = 1.0 + 2.0**-10  # covers the float64 rounding of the bound and of tau + eps
BLOCK = 32  # films per block of the candidate search (about sqrt(n_films / candidates))
HALF_MAX = float(np.finfo(np.float32).max) / 2  # below it, no sum of the bound overflows
SMALLEST_SUBNORMAL = 2.0**-149


def gamma(n: int) -> float:
    """Higham's ``gamma_n = n u / (1 - n u)`` (Accuracy and Stability of Numerical Algorithms,
    2nd ed., Lemma 3.1): a dot product of length n computed in binary32 in any order, with or
    without fused multiply-adds, is within ``gamma_n * sum_k |x_k y_k|`` of the true one (eq. 3.5)."""
    return n * UNIT_ROUNDOFF / (1.0 - n * UNIT_ROUNDOFF)


def score_error_bound(
    abs_dot: torch.Tensor, bias_max: float, tau: torch.Tensor, dim: int
) -> torch.Tensor:
    """(B,) float64 ``eps``: the largest reference score a film whose approximate score is at
    most ``tau`` ((B,) float64) can have is ``tau + eps``.

    ``abs_dot`` (B,) float64 bounds ``a = sum_k |e_k| |v_fk|`` over all films; ``bias_max``
    bounds ``|bias_f|``; ``dim`` is D. With ``u`` the unit roundoff and ``g = gamma(D + 1)``:
    the BLAS sum of the D products and the bias (any order) is within ``g (a + |b|)`` of the
    true ``e.v + b``, and so is the reference ``(dot + b)`` (the pairwise dot within
    ``gamma(ceil(log2 D) + 1) a <= gamma(D) a``, one rounding for the add,
    ``gamma(D) + u (1 + gamma(D)) <= gamma(D + 1)``): the two differ by at most
    ``d1 = 2 g (a + bias_max)``. The term add (the same ``term`` on both sides) rounds
    each side once more, within ``u |y| / (1 - u)`` of the approximate score ``y``:
    ``|r - y| <= d1 (1 + u) + 2 u |y| / (1 - u)``. ``y + c |y|`` grows with ``y`` (``c < 1``),
    so over ``y <= tau`` it is largest at ``tau``. A product that underflows errs by up to
    half the smallest subnormal instead of a relative ``u`` (Higham §2.1): ``d1`` adds
    ``2 (D + 1)`` of them. No sum may overflow (``candidate_top_n`` checks).
    """
    u, g = UNIT_ROUNDOFF, gamma(dim + 1)
    d1 = 2 * g * (abs_dot + bias_max) + 2 * (dim + 1) * SMALLEST_SUBNORMAL
    return (d1 * (1 + u) + 2 * u * tau.abs() / (1 - u)) * BOUND_SLACK


class FilmTables:
    """What every batch reads of the films: their vectors in the layouts the two products
    need, the bias, and the per-dimension maxima of the error bound (built once).

    ``augmented_t`` (D + 1, n_padded) holds the vectors transposed with the bias as one more
    dimension (the BLAS product adds it: no separate pass), padded to whole blocks of
    ``BLOCK`` films with films of vector 0 and bias ``-inf`` (scored ``-inf``, never ranked).
    """

    def __init__(self, vectors: torch.Tensor, bias: torch.Tensor) -> None:
        """``vectors`` (n_films, D) and ``bias`` (n_films,), any float dtype, on the scoring device."""
        vectors = vectors.detach().float()
        self.n_films, dim = vectors.shape
        self.bias = bias.detach().float().contiguous()
        n_padded = -(-self.n_films // BLOCK) * BLOCK
        self.augmented_t = torch.zeros((dim + 1, n_padded), device=vectors.device)
        self.augmented_t[:dim, : self.n_films] = vectors.T
        self.augmented_t[dim, : self.n_films] = self.bias
        self.augmented_t[dim, self.n_films :] = -torch.inf
        self.vectors = vectors.contiguous()  # (n_films, D): the reference products
        self.abs_max = vectors.abs().amax(dim=0).double()  # (D,) max_f |v_fk|
        self.bias_max = float(self.bias.abs().max()) if self.n_films else 0.0

    @property
    def n_padded(self) -> int:
        return self.augmented_t.shape[1]

    def approximate(
        self, user: torch.Tensor, term: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, n_padded) float32 ``(user @ vectors.T + bias) + term``, ``user`` (B, D) float32 and
        ``term`` (B, n_films); the first sum by BLAS in any order (``score_error_bound``).
        Written into ``out`` (a contiguous (B, n_padded) float32 buffer) when given."""
        augmented = torch.cat([user, torch.ones((user.shape[0], 1), device=user.device)], dim=1)
        if out is None:
            out = torch.empty((user.shape[0], self.n_padded), device=user.device)
        if out.device.type == "cpu":
            # numpy's OpenBLAS: about 3x torch's MKL fp32 product on this AMD CPU (bench/RESULTS.md)
            np.matmul(augmented.numpy(), self.augmented_t.numpy(), out=out.numpy())
        else:
            # full fp32 inside the product (no TF32/bf16): the error bound assumes binary32 arithmetic
            previous = torch.get_float32_matmul_precision()
            torch.set_float32_matmul_precision("highest")
            try:
                torch.mm(augmented, self.augmented_t, out=out)
            finally:
                torch.set_float32_matmul_precision(previous)
        out[:, : self.n_films] += term
        return out


def best_approximate(
    approx: torch.Tensor, count: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(values (B, m), columns (B, m), has_nan (B,) bool): the ``m = min(count, n_padded)``
    highest values of each row of ``approx`` (B, n_padded), in no particular order except
    that the last one is the smallest of them (any choice among ties; all columns in their
    order when ``m == n_padded``); ``has_nan`` marks the rows holding a NaN anywhere (their
    values mean nothing).

    Block ``j`` is the columns ``j, j + nb, j + 2 nb, ...`` (``nb = n_padded / BLOCK``), so
    its maximum is a vertical max over a (BLOCK, nb) view. The best ``m`` values lie in the
    ``m`` blocks of highest maximum: an element outside those blocks is at most their
    smallest maximum, and each of them holds one element at least that large, so it is no
    larger than the m-th best of the elements inside them. On the CPU the selections are
    numpy's ``argpartition`` (about 3x ``torch.topk`` at these sizes, and no sort is needed:
    the candidates are ranked by their reference scores afterwards); written here because
    neither library has a top-k through block maxima.
    """
    rows, width = approx.shape
    n_blocks = width // BLOCK
    block_max = approx.view(rows, BLOCK, n_blocks).amax(dim=1)
    has_nan = torch.isnan(block_max).any(dim=1)
    picked_count = min(count, n_blocks)
    offsets = n_blocks * torch.arange(BLOCK, device=approx.device)[None, :, None]
    if approx.device.type != "cpu":
        picked = torch.topk(block_max, picked_count, dim=1).indices
        columns = (picked[:, None, :] + offsets).reshape(rows, -1)
        values, at = torch.topk(approx.gather(1, columns), min(count, columns.shape[1]), dim=1)
        return values, columns.gather(1, at), has_nan
    picked = torch.from_numpy(largest(block_max.numpy(), picked_count))
    columns = (picked[:, None, :] + offsets).reshape(rows, -1)
    gathered = approx.gather(1, columns)
    at = torch.from_numpy(largest(gathered.numpy(), min(count, columns.shape[1])))
    return gathered.gather(1, at), columns.gather(1, at), has_nan


def largest(values: np.ndarray, m: int) -> np.ndarray:
    """(B, m) int64 positions of the ``m`` largest of each row of ``values`` (B, w), the m-th
    largest last (``np.argpartition``; NaN rows: any positions); every position in order when
    ``m >= w``."""
    if m >= values.shape[1]:
        return np.broadcast_to(np.arange(values.shape[1]), values.shape).copy()
    return np.argpartition(np.negative(values), m - 1, axis=1)[:, :m]


def distinct_seen(
    seen_rows: torch.Tensor, seen_films: torch.Tensor, n_rows: int, n_films: int
) -> torch.Tensor:
    """(n_rows,) int64 distinct seen films per row (a repeated entry counts once)."""
    keys = torch.unique(seen_rows * n_films + seen_films)
    return torch.bincount(keys // n_films, minlength=n_rows)


def candidate_top_n(films: FilmTables, user: torch.Tensor, term: torch.Tensor, approx: torch.Tensor,
                    seen_count: torch.Tensor, n: int, margin: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(films (B, k), scores (B, k), count (B,), certified (B,) bool) from the candidates alone.

    ``approx`` (B, n_padded) the approximate scores with the seen films at ``-inf``;
    ``seen_count`` (B,) the distinct seen films per row; ``term`` (B, n_films) the
    model's terms; ``user`` (B, D) float32. A row is certified when it holds no NaN, no sum
    of either computation can overflow (``a + max|b| < FLT_MAX / 2``), and either
    ``tau + eps < r_n`` (with ``|tau| < FLT_MAX / 2``: an unseen film whose approximate score
    overflowed to ``-inf`` then has a reference score near ``-FLT_MAX``, far below ``r_n``) or
    every film outside the candidates is ``-inf`` and exactly the seen and padding films are
    (counted from the candidates). Rows not certified are not the reference ranking in
    general (``certified_top_n`` replaces them). Past ``count`` a row is padding (film indices
    may lie past the vocabulary there).
    """
    n_films, n_padded = films.n_films, films.n_padded
    k = min(n + margin, n_films)
    values, cand, has_nan = best_approximate(approx, k + 1)
    if values.shape[1] > k:
        tau = values[:, k].double()
    else:
        tau = torch.full((len(values),), -torch.inf, dtype=torch.float64, device=values.device)
    values, cand = values[:, :k], cand[:, :k]
    real = cand.clamp(max=n_films - 1)  # padding films are -inf: masked below
    ref = reference_scores(user, films.vectors[real], films.bias[real], term.gather(1, real))
    masked = torch.isneginf(values)  # seen or padding, in a certified row
    ref[masked] = -torch.inf
    ref_np, cand_np = ref.cpu().numpy(), cand.cpu().numpy()
    order = np.lexsort((cand_np, -ref_np), axis=1)[:, : min(n, n_films)]
    top_films = np.take_along_axis(cand_np, order, axis=1)
    top_values = np.take_along_axis(ref_np, order, axis=1)
    count = (~np.isneginf(top_values)).sum(axis=1)

    abs_dot = (user.abs().double() @ films.abs_max) * BOUND_SLACK
    eps = score_error_bound(abs_dot, films.bias_max, tau, user.shape[1]).cpu().numpy()
    tau_np, r_n = tau.cpu().numpy(), top_values[:, -1].astype(np.float64)
    with np.errstate(invalid="ignore"):
        separated = np.isfinite(r_n) & (np.abs(tau_np) < HALF_MAX) & (tau_np + eps < r_n)
    neg_inf = n_padded - (~masked).sum(dim=1)  # every film outside the candidates is -inf here
    covered = torch.isneginf(tau) & (neg_inf == seen_count + (n_padded - n_films))
    sane = ~has_nan & (abs_dot + films.bias_max < HALF_MAX)
    certified = (
        (covered.cpu().numpy() | separated) & sane.cpu().numpy() & ~np.isnan(ref_np).any(axis=1)
    )
    return top_films, top_values, count, certified


def certified_top_n(films: FilmTables, user: torch.Tensor, term: torch.Tensor, seen_rows: torch.Tensor,
                    seen_films: torch.Tensor, n: int, margin: int,
                    approx: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:  # fmt: skip
    """The reference ranking's top n unseen films: (films (B, k), scores (B, k), count (B,),
    users ranked by the exact path), as ``exact_top_n`` returns them for every user.

    ``user`` (B, D) float32 embeddings; ``term`` (B, n_films) the model's terms
    alone; ``seen_rows`` / ``seen_films`` (nnz,) the seen entries; ``approx`` an optional
    (B, n_padded) float32 buffer for the approximate scores (overwritten).
    """
    batch = user.shape[0]
    approx = films.approximate(user, term, approx)
    approx[seen_rows, seen_films] = -torch.inf
    seen_count = distinct_seen(seen_rows, seen_films, batch, films.n_films)
    top_films, top_values, count, certified = candidate_top_n(
        films, user, term, approx, seen_count, n, margin
    )
    redo = np.flatnonzero(~certified)
    if len(redo):
        rows = torch.from_numpy(redo).to(user.device)
        renumber = torch.full((batch,), -1, dtype=torch.int64, device=user.device)
        renumber[rows] = torch.arange(len(redo), device=user.device)
        keep = renumber[seen_rows] >= 0
        exact = exact_top_n(user[rows], films.vectors, films.bias, term[rows], renumber[seen_rows[keep]],
                            seen_films[keep], n)  # fmt: skip
        top_films[redo], top_values[redo], count[redo] = exact
    return top_films, top_values, count, len(redo)
