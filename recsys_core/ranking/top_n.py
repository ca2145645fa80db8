"""Top-N unseen films per user, with an exact and deterministic order.

Order: score descending, ties broken by ``film_idx`` ascending. Film indices follow
``movieId`` order (the features job numbers films by movieId), so this is the contract's
"ties broken by movie_id".
"""

from __future__ import annotations

import numpy as np
import torch


def top_n_unseen(
    scores: torch.Tensor, seen_rows: torch.Tensor, seen_films: torch.Tensor, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(film_idx (B, k), scores (B, k), count (B,)) of each row's best unseen films.

    ``scores`` (B, n_films) is modified: seen entries become ``-inf``. Row ``b`` has
    ``count[b] = min(n, unseen films)`` valid leading entries; the rest are padding.
    NaN scores are kept (``topk`` ranks NaN first) so the quality gate sees them.
    """
    scores[seen_rows, seen_films] = -torch.inf
    k = min(n, scores.shape[1])
    # one more than needed: a row whose (k+1)-th score equals its k-th has films outside
    # the top k tied with it, and needs the exact tie order
    values, films = torch.topk(scores, min(k + 1, scores.shape[1]), dim=1)
    if values.shape[1] > k:
        spill = (values[:, k - 1] == values[:, k]) & torch.isfinite(values[:, k - 1])
    else:
        spill = torch.zeros(values.shape[0], dtype=torch.bool, device=values.device)
    values, films = values[:, :k], films[:, :k]
    values_np, films_np = values.cpu().numpy(), films.cpu().numpy()
    order = np.lexsort((films_np, -values_np), axis=1)
    films_np = np.take_along_axis(films_np, order, axis=1)
    values_np = np.take_along_axis(values_np, order, axis=1)
    for b in torch.nonzero(spill).flatten().tolist():
        row = scores[b].cpu().numpy()
        candidates = np.flatnonzero(row >= values_np[b, -1])
        best = candidates[np.lexsort((candidates, -row[candidates]))][:k]
        films_np[b], values_np[b] = best, row[best]
    count = (~np.isneginf(values_np)).sum(axis=1)
    return films_np, values_np, count


def top_n_lists(scores: torch.Tensor, seen_rows: torch.Tensor, seen_films: torch.Tensor, n: int) -> np.ndarray:
    """(B, min(n, n_films)) int64 film_idx of each row's best unseen films, -1 past its count.

    ``top_n_unseen`` (same order and tie rule; ``scores`` is modified) with the padding
    that validation and the evaluation's metrics read as "no film".
    """
    films, _, count = top_n_unseen(scores, seen_rows, seen_films, n)
    films = films.astype(np.int64)
    films[np.arange(films.shape[1])[None, :] >= count[:, None]] = -1
    return films
