"""Top-N metrics over (users x K) top lists, vectorized with numpy.

Conventions, shared by the offline evaluation and the nightly validation of training:

- ``top`` is an (n_users, width) integer array of item indices, best first; ``-1`` pads a
  row that has fewer than ``width`` recommendations (a padded slot is never a hit).
- ``relevant`` (and ``seen``) hold one set of item indices per row of ``top`` as a
  ``recsys_core.data.csr.RatingsCSR`` (only ``indptr`` and ``indices`` are read).
- Ranking metrics are means over the users with at least one relevant item; users without
  one cannot score and are left out. A user with relevant items and an empty list counts
  as zero.
- Recall@K and NDCG@K are normalized by min(K, |relevant|), so an oracle ranking scores
  1.0 even for users with more than K relevant items. MAP@K uses the same normalizer.
"""

from __future__ import annotations

import numpy as np

from recsys_core.data.csr import RatingsCSR

RANKING_KINDS = ("ndcg", "recall", "precision", "map", "hitrate")

# the figures of the evaluation report (name -> K)
EVAL_KS: dict[str, int] = {
    "ndcg@10": 10,
    "ndcg@100": 100,
    "recall@20": 20,
    "recall@50": 50,
    "precision@10": 10,
    "map@10": 10,
    "hitrate@10": 10,
}
COVERAGE_K = 10  # catalog coverage and popularity bias look at what a user sees first
# the nightly validation figures of training (manifest metrics, read by the quality gate)
VALIDATION_KS: dict[str, int] = {"ndcg@10": 10, "recall@20": 20, "ndcg@100": 100}


def _row_counts(sets: RatingsCSR) -> np.ndarray:
    return np.diff(np.asarray(sets.indptr)).astype(np.int64)


def hits(top: np.ndarray, relevant: RatingsCSR) -> np.ndarray:
    """(n_users, width) bool: is ``top[u, r]`` in user ``u``'s set (padding never is).

    Vectorized with (row, item) keys: one ``np.isin`` over the whole matrix.
    """
    top = np.asarray(top)
    n_users = top.shape[0]
    counts = _row_counts(relevant)
    if len(counts) != n_users:
        raise ValueError(f"top has {n_users} users, relevant has {len(counts)}")
    indices = np.asarray(relevant.indices, dtype=np.int64)
    valid = top >= 0
    n = np.int64(max(int(top.max(initial=0)), int(indices.max(initial=0))) + 1)
    rel_keys = np.repeat(np.arange(n_users, dtype=np.int64), counts) * n + indices
    top_keys = np.arange(n_users, dtype=np.int64)[:, None] * n + np.where(valid, top, 0).astype(np.int64)
    return np.isin(top_keys, rel_keys) & valid


def _discounts(width: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(width) + 2.0)


def per_user(kind: str, h: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    """One ranking metric per user from the hit matrix ``h`` (users with n_rel > 0 only)."""
    h = h[:, :k].astype(np.float64)
    cap = np.minimum(k, n_rel).astype(np.float64)
    if kind == "ndcg":
        disc = _discounts(k)
        ideal = np.concatenate([[0.0], np.cumsum(disc)])
        return (h @ disc[: h.shape[1]]) / ideal[np.minimum(k, n_rel)]
    if kind == "recall":
        return h.sum(axis=1) / cap
    if kind == "precision":
        return h.sum(axis=1) / k
    if kind == "map":
        precision_at = np.cumsum(h, axis=1) / np.arange(1, h.shape[1] + 1)
        return (precision_at * h).sum(axis=1) / cap
    if kind == "hitrate":
        return h.any(axis=1).astype(np.float64)
    raise ValueError(f"unknown metric kind {kind!r} (known: {', '.join(RANKING_KINDS)})")


def _parse(name: str) -> str:
    kind = name.split("@", 1)[0]
    if kind not in RANKING_KINDS:
        raise ValueError(f"unknown metric {name!r}")
    return kind


def ranking_metrics(
    top: np.ndarray, relevant: RatingsCSR, ks: dict[str, int], per_user_out: dict | None = None
) -> dict[str, float]:
    """Means over users with relevant items of the asked metrics (``{"ndcg@10": 10, ...}``).

    A K larger than the lists' width is an error (pad with -1 to evaluate shorter lists).
    When ``per_user_out`` is a dict, it receives each metric's per-user values (NaN for
    users without relevant items), for breakdowns such as recall by user activity.
    """
    top = np.asarray(top)
    n_rel = _row_counts(relevant)
    scored = n_rel > 0
    for name, k in ks.items():
        _parse(name)
        if k > top.shape[1]:
            raise ValueError(f"{name} needs top-{k} lists, got {top.shape[1]}")
    if not scored.any():
        return {name: float("nan") for name in ks}
    h = hits(top, relevant)[scored]
    out: dict[str, float] = {}
    for name, k in ks.items():
        values = per_user(_parse(name), h, n_rel[scored], k)
        out[name] = float(values.mean())
        if per_user_out is not None:
            full = np.full(len(n_rel), np.nan)
            full[scored] = values
            per_user_out[name] = full
    return out


def seen_leakage(top: np.ndarray, seen: RatingsCSR) -> int:
    """How many recommended items the user had already rated (in the training part): must be 0."""
    return int(hits(top, seen).sum())


def user_coverage(top: np.ndarray) -> float:
    """Share of users with at least one recommendation."""
    top = np.asarray(top)
    return float((top >= 0).any(axis=1).mean()) if top.shape[0] else float("nan")


def catalog_coverage(top: np.ndarray, n_catalog: int, k: int = COVERAGE_K) -> float:
    """Share of the catalog's ``n_catalog`` items that appear in some user's top ``k``."""
    head = np.asarray(top)[:, :k]
    return float(len(np.unique(head[head >= 0])) / n_catalog) if n_catalog else float("nan")


def popularity_percentiles(counts: np.ndarray) -> np.ndarray:
    """Per item, its popularity percentile among the catalog's items, in [0, 1].

    ``counts`` are the items' training rating counts; items with a count of 0 are outside
    the catalog and get 0. Within the catalog: the share of the other items that are less
    popular, ties counting half (the most popular item is 1, the least 0).
    """
    counts = np.asarray(counts)
    out = np.zeros(len(counts))
    in_catalog = counts > 0
    c = counts[in_catalog]
    if len(c) == 0:
        return out
    ordered = np.sort(c)
    below = np.searchsorted(ordered, c, side="left")
    equal = np.searchsorted(ordered, c, side="right") - below
    out[in_catalog] = (below + 0.5 * (equal - 1)) / max(len(c) - 1, 1)
    return out


def mean_popularity_percentile(top: np.ndarray, percentiles: np.ndarray, k: int = COVERAGE_K) -> float:
    """Mean popularity percentile of the recommended items in the top ``k`` (popularity bias)."""
    head = np.asarray(top)[:, :k]
    head = head[head >= 0]
    return float(percentiles[head].mean()) if len(head) else float("nan")


def pad(top: np.ndarray, width: int) -> np.ndarray:
    """``top`` with at least ``width`` columns, padded with -1."""
    top = np.asarray(top, dtype=np.int64)
    if top.shape[1] >= width:
        return top
    return np.concatenate([top, np.full((top.shape[0], width - top.shape[1]), -1, dtype=np.int64)], axis=1)


def evaluate_top_lists(
    top: np.ndarray,
    relevant: RatingsCSR,
    seen: RatingsCSR,
    item_counts: np.ndarray,
    ks: dict[str, int] | None = None,
    per_user_out: dict | None = None,
) -> dict[str, float]:
    """Every figure of the report for one method's lists.

    ``item_counts`` are the catalog's training rating counts, indexed by item; the catalog
    is every item with at least one training rating (what a recommender can know about),
    which is the denominator of catalog coverage. Coverage and popularity bias are taken
    over all rows (every held-out user), ranking metrics over users with relevant items.
    """
    ks = dict(EVAL_KS if ks is None else ks)
    top = pad(top, max(ks.values(), default=1))
    item_counts = np.asarray(item_counts)
    out = ranking_metrics(top, relevant, ks, per_user_out)
    out["user_coverage"] = user_coverage(top)
    out[f"catalog_coverage@{COVERAGE_K}"] = catalog_coverage(top, int((item_counts > 0).sum()))
    out[f"popularity_pct@{COVERAGE_K}"] = mean_popularity_percentile(top, popularity_percentiles(item_counts))
    out["seen_leakage"] = seen_leakage(top, seen)
    out["users"] = int(top.shape[0])
    out["scored_users"] = int((_row_counts(relevant) > 0).sum())
    return out


def validation_metrics(top: np.ndarray, relevant: RatingsCSR, per_user_out: dict | None = None) -> dict[str, float]:
    """NDCG@10, Recall@20, and NDCG@100 when the (n_users, width) lists are that long.

    The nightly validation figures (the model manifest's metrics, which the quality gate
    compares): the same code as the offline report's figures. ``per_user_out``: as in
    ``ranking_metrics``.
    """
    ks = {name: k for name, k in VALIDATION_KS.items() if k <= top.shape[1]}
    return ranking_metrics(top, relevant, ks, per_user_out)
