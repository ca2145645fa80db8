"""Top-N metrics from top-k lists: NDCG@k and Recall@k (normalized by min(k, n_relevant)).

``top`` is an (n_users, >=k) array of film indices, best first; ``relevant`` is a CSR of
the same users' relevant films. Users without a relevant film are left out of the means.
"""

from __future__ import annotations

import numpy as np

from recsys_core.training.data import RatingsCSR


def hits(top: np.ndarray, relevant: RatingsCSR) -> np.ndarray:
    """(n_users, width) bool: is ``top[u, r]`` relevant for user ``u``. Vectorized with keys."""
    n_users = top.shape[0]
    if relevant.n_users != n_users:
        raise ValueError(f"top has {n_users} users, relevant has {relevant.n_users}")
    n = np.int64(max(relevant.n_films, int(top.max(initial=0)) + 1))
    rel_keys = relevant.entry_rows() * n + relevant.indices
    top_keys = np.arange(n_users, dtype=np.int64)[:, None] * n + top.astype(np.int64)
    return np.isin(top_keys, rel_keys)


def ndcg_recall(top: np.ndarray, relevant: RatingsCSR, ks: dict[str, int]) -> dict[str, float]:
    """Means over users with relevant films of ``ndcg@k`` / ``recall@k`` for the asked ks.

    ``ks`` maps a metric name (``"ndcg@10"``, ``"recall@20"``) to its k.
    """
    n_rel = relevant.counts
    scored = n_rel > 0
    out: dict[str, float] = {}
    if not scored.any():
        return {name: float("nan") for name in ks}
    h = hits(top, relevant)[scored].astype(np.float64)
    n_rel = n_rel[scored]
    discounts = 1.0 / np.log2(np.arange(top.shape[1]) + 2.0)
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])
    for name, k in ks.items():
        if k > top.shape[1]:
            raise ValueError(f"{name} needs top-{k} lists, got {top.shape[1]}")
        cap = np.minimum(k, n_rel)
        if name.startswith("ndcg@"):
            out[name] = float(np.mean((h[:, :k] @ discounts[:k]) / ideal[cap]))
        elif name.startswith("recall@"):
            out[name] = float(np.mean(h[:, :k].sum(axis=1) / cap))
        else:
            raise ValueError(f"unknown metric {name!r}")
    return out


DEFAULT_METRICS = {"ndcg@10": 10, "recall@20": 20, "ndcg@100": 100}


def standard_metrics(top: np.ndarray, relevant: RatingsCSR) -> dict[str, float]:
    """NDCG@10, Recall@20, and NDCG@100 when the lists are long enough."""
    ks = {name: k for name, k in DEFAULT_METRICS.items() if k <= top.shape[1]}
    return ndcg_recall(top, relevant, ks)
