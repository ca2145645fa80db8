"""The reference score of a (user, film) pair: one fp32 computation in a fixed order.

A BLAS matrix product gives the same dot product different last bits depending on the
library, the shape of the call and a row's place in it (measured: OpenBLAS at 2,048 vs
1,000 users, MKL under 16 users), so a score that came from one would depend on the batch
it was computed in. The published score is instead defined operation by operation, each an
IEEE-754 binary32 multiply or add with round-to-nearest, so every device and every batch
shape computes the same bits:

    p_k   = e_k * v_k                 (k < D, rounded; p_k = 0 for D <= k < W, W the power of two >= D)
    dot   = pairwise sum of p_0..p_{W-1}: halve W times, p_k + p_{k + W/2} each time
    score = (dot + bias_f) + term_uf

``e`` the user embedding (``model.encode``, as float32), ``v`` / ``bias_f`` the film's
output vector and bias (``model.film_vectors()``, ``model.film_bias``), ``term_uf`` what
the model adds to its logits (``add_item_scores``: the item-item term and any other term it
holds) computed alone, by that method on a zero matrix, and added once here, where
``UserAE.forward`` adds it entry by entry onto the logits (the same value up to the last
bits). Seen films score ``-inf``.
Pairwise summation (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., §4.2)
takes log2(W) elementwise tensor operations instead of D.

``exact_top_n`` ranks every film by this score (the exact path, and the fast path's
fallback for a user it cannot certify); ``recsys_core.scoring.candidates`` computes it only
for a few candidates per user.
"""

from __future__ import annotations

import numpy as np
import torch

from recsys_core.ranking.top_n import top_n_unseen

FILM_BLOCK_VALUES = 1 << 22  # products held at once by the exact path (16 MiB of float32)


def pairwise_dot(user: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """(B, C) float32 reference dot products (module docstring) of ``user`` (B, D) float32
    with ``vectors`` (1, C, D), films shared by every user, or (B, C, D), C films per user.

    Separate multiply and add tensors, never ``addcmul`` or a matrix product: a fused
    multiply-add rounds once and would change the bits.
    """
    terms = user[:, None, :] * vectors
    width = 1 << max(user.shape[1] - 1, 0).bit_length()
    if width != user.shape[1]:
        terms = torch.nn.functional.pad(terms, (0, width - user.shape[1]))
    while terms.shape[-1] > 1:
        half = terms.shape[-1] // 2
        terms = terms[..., :half] + terms[..., half:]
    return terms[..., 0]


def reference_scores(
    user: torch.Tensor, vectors: torch.Tensor, bias: torch.Tensor, term: torch.Tensor
) -> torch.Tensor:
    """(B, C) float32 reference scores ``(dot + bias) + term``.

    ``vectors`` as in ``pairwise_dot``; ``bias`` (C,) or (B, C) and ``term`` (B, C), the
    same films as ``vectors``.
    """
    scores = pairwise_dot(user, vectors)
    scores += bias
    scores += term
    return scores


def exact_top_n(user: torch.Tensor, vectors: torch.Tensor, bias: torch.Tensor, term: torch.Tensor,
                seen_rows: torch.Tensor, seen_films: torch.Tensor, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """``top_n_unseen`` of the reference scores over every film: (films (B, k), scores (B, k), count (B,)).

    ``user`` (B, D); ``vectors`` (n_films, D) every film's vector; ``bias`` (n_films,);
    ``term`` (B, n_films); ``seen_rows`` / ``seen_films`` (nnz,) the seen entries (row within
    these B users, film_idx). The products are formed a block of films at a time.
    """
    n_films = vectors.shape[0]
    scores = torch.empty((user.shape[0], n_films), device=user.device)
    step = max(1, FILM_BLOCK_VALUES // max(user.numel(), 1))
    for lo in range(0, n_films, step):
        scores[:, lo : lo + step] = pairwise_dot(user, vectors[None, lo : lo + step])
    scores += bias
    scores += term
    return top_n_unseen(scores, seen_rows, seen_films, n)
