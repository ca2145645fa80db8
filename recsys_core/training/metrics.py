"""Validation metrics of the training loop: NDCG@k and Recall@k from top-k lists.

The numbers come from ``recsys_core.evaluation.metrics``, the same code the offline
evaluation report uses, so the nightly manifest and the report measure alike (Recall and
NDCG normalized by min(k, n_relevant); users without a relevant film left out).

``top`` is an (n_users, >=k) array of film indices, best first; ``relevant`` is a CSR of
the same users' relevant films.
"""

from __future__ import annotations

import numpy as np

from recsys_core.evaluation import metrics as eval_metrics
from recsys_core.training.data import RatingsCSR


def hits(top: np.ndarray, relevant: RatingsCSR) -> np.ndarray:
    """(n_users, width) bool: is ``top[u, r]`` relevant for user ``u``."""
    return eval_metrics.hits(top, relevant)


def ndcg_recall(top: np.ndarray, relevant: RatingsCSR, ks: dict[str, int]) -> dict[str, float]:
    """Means over users with relevant films of ``ndcg@k`` / ``recall@k`` for the asked ks.

    ``ks`` maps a metric name (``"ndcg@10"``, ``"recall@20"``) to its k.
    """
    for name in ks:
        if not name.startswith(("ndcg@", "recall@")):
            raise ValueError(f"unknown metric {name!r}")
    return eval_metrics.ranking_metrics(top, relevant, ks)


DEFAULT_METRICS = {"ndcg@10": 10, "recall@20": 20, "ndcg@100": 100}


def standard_metrics(top: np.ndarray, relevant: RatingsCSR) -> dict[str, float]:
    """NDCG@10, Recall@20, and NDCG@100 when the lists are long enough."""
    ks = {name: k for name, k in DEFAULT_METRICS.items() if k <= top.shape[1]}
    return ndcg_recall(top, relevant, ks)
