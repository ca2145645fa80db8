"""One top-N and one holdout for validation, the quality gate, scoring and evaluation.

Popularity scores are full of ties, so a top-N without the movieId tie rule would give the
gate a popularity figure computed differently from the published lists: every caller must
rank through ``recsys_core.ranking.top_n``.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import torch

from recsys_core.data.csr import RatingsCSR
from recsys_core.evaluation.baselines import Popularity, recommend
from recsys_core.ranking.holdout import expected_holdout_size, holdout_mask
from recsys_core.ranking.metrics import validation_metrics
from recsys_core.ranking.top_n import top_n_unseen
from recsys_core.scoring.score import score_popular_users
from recsys_core.training.validation import Validation, popularity_metrics, top_n_of

# 4 users x 9 films; films 1, 3, 5, 8 are each rated by 2 users (a four-way tie), film 0 by 3
SEEN = [[0, 1, 3], [0, 5, 8], [0, 1], [3, 5, 8]]
N_FILMS = 9


def seen_csr() -> RatingsCSR:
    return RatingsCSR.from_lists(SEEN, N_FILMS)


def by_tie_rule(scores: np.ndarray, seen: list[int], n: int) -> list[int]:
    """The contract, spelled out: unseen films by score descending, then film_idx ascending."""
    unseen = np.setdiff1d(np.arange(len(scores)), seen)
    return unseen[np.lexsort((unseen, -scores[unseen]))][:n].tolist()


def test_validation_evaluation_and_scoring_rank_ties_alike():
    csr = seen_csr()
    tied = np.array([[1, 2, 2, 2, 2, 2, 0, 2, 2]] * 4, dtype=np.float32)  # six films tied at 2.0
    users = np.arange(4)
    expected = [by_tie_rule(tied[u], SEEN[u], 4) for u in users]

    def score_fn(batch):
        return torch.from_numpy(tied[: batch.size].copy())

    validation_lists = top_n_of(score_fn, csr, users, 4, batch_size=3, device=torch.device("cpu"))
    evaluation_lists = recommend(lambda rows: tied[rows], csr, users, 4, batch=3)
    part = csr.select_rows(users)
    scoring_lists, _, _ = top_n_unseen(torch.from_numpy(tied.copy()), torch.from_numpy(part.entry_rows()),
                                       torch.from_numpy(part.indices), 4)  # fmt: skip
    assert validation_lists.tolist() == expected
    assert evaluation_lists.tolist() == expected
    assert scoring_lists.tolist() == expected


def test_gate_popularity_figure_is_the_published_popularity_lists():
    csr = seen_csr()
    counts = csr.film_counts().astype(np.float32)
    users = np.arange(4)
    relevant = RatingsCSR.from_lists([[2], [4, 7], [3], [1]], N_FILMS)
    expected = np.array([by_tie_rule(counts, SEEN[u], 3) for u in users])

    # the figure the gate reads (training's popularity metrics in the model manifest)
    gate = popularity_metrics(csr, Validation(users, relevant, n_hidden=5), 3, torch.device("cpu"))
    assert gate == validation_metrics(expected, relevant)
    # the evaluation's popularity baseline
    assert recommend(Popularity().fit(csr, {}), csr, users, 3).tolist() == expected.tolist()
    # the scoring job's popularity fallback rows
    buffer = io.BytesIO()
    from recsys_core.publish.contract import SCHEMA

    with pq.ParquetWriter(buffer, SCHEMA) as writer:
        score_popular_users(writer, csr, users, np.arange(100, 104), np.arange(N_FILMS) + 1, "v", 3, batch_size=2)
    rows = pq.read_table(io.BytesIO(buffer.getvalue())).sort_by([("user_id", "ascending"), ("rank", "ascending")])
    published = np.array(rows.column("movie_id").to_pylist()).reshape(4, 3) - 1
    assert published.tolist() == expected.tolist()


def test_one_holdout_rule():
    users = np.repeat(np.arange(4), [4, 5, 9, 10])
    rng = np.random.default_rng(0)
    movies = rng.permutation(len(users))
    timestamps = rng.integers(0, 5, len(users))
    held = holdout_mask(users, movies, timestamps)
    assert np.bincount(users[held], minlength=4).tolist() == [expected_holdout_size(n) for n in (4, 5, 9, 10)]
    assert [expected_holdout_size(n) for n in (4, 5, 9, 10)] == [0, 1, 1, 2]  # max(1, floor(0.2 n)) from 5 up
