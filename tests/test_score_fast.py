"""The fast scorer (certified candidates) against the exact path, on real torch models.

The exact path ranks every film by the reference score (``scoring/reference.py``); the fast
path ranks a few BLAS-picked candidates by it and must prove, user by user, that nothing
outside them belongs in the list. These tests build data where that proof has to fail
(ties across the cut, BLAS sums that reorder films) and check the published rows are still
the exact path's, bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recsys_core.data.csr import RatingsCSR
from recsys_core.device import torch_threads
from recsys_core.models.user_ae import UserAE, UserAEConfig
from recsys_core.scoring.candidates import (
    BLOCK,
    FilmTables,
    best_approximate,
    candidate_top_n,
    certified_top_n,
    distinct_seen,
)
from recsys_core.scoring.reference import exact_top_n, pairwise_dot
from recsys_core.scoring.score import CPU_CHUNK_USERS, BatchScorer

torch.set_num_threads(1)
CPU = torch.device("cpu")


def random_csr(rng: np.random.Generator, n_users: int, n_films: int, most: int) -> RatingsCSR:
    """Users with 0..most films each, half of them liked (4 stars and up)."""
    counts = rng.integers(0, most + 1, n_users)
    rows = np.repeat(np.arange(n_users), counts)
    films = np.concatenate([rng.choice(n_films, c, replace=False) for c in counts])
    ratings = rng.choice([2.0, 3.0, 4.0, 5.0], len(films)).astype(np.float32)
    timestamps = rng.integers(0, 10**6, len(films))
    return RatingsCSR.from_entries(rows, films, n_users, n_films, ratings, timestamps)


def tied_model(rng: np.random.Generator, n_films: int, group: int, distinct: int) -> UserAE:
    """A user AE whose films come in groups of ``group`` identical films (same vector, same
    bias: every user scores them equal), with an active item-item term that points only at
    the first ``distinct`` films, so the groups past them stay tied after the term."""
    model = UserAE(n_films, torch.from_numpy(rng.normal(size=(n_films, 8)).astype(np.float32)),
                   UserAEConfig(embedding_dim=64, hidden_dim=32, item_neighbours=5))  # fmt: skip
    source = np.arange(n_films)
    source[distinct:] = distinct + (np.arange(n_films - distinct) // group) * group
    with torch.no_grad():
        model.free.copy_(torch.from_numpy(rng.normal(0, 0.5, (n_films, 64)).astype(np.float32)))
        model.film_content.copy_(model.film_content[source])
        model.free.copy_(model.free[source])
        model.film_bias.copy_(
            torch.from_numpy(rng.normal(0, 1, n_films).astype(np.float32))[source]
        )
        model.encoder_bag.weight.normal_(0, 0.3)
        index = torch.from_numpy(rng.integers(0, distinct, (n_films, 5)))
        # multiples of 2**-8: the term's sums are exact in any order (CUDA adds them atomically)
        weights = torch.from_numpy(rng.integers(0, 128, (n_films, 5)).astype(np.float32) / 256)
        model.item_item.set(index, weights, blend=3.0)
    return model.eval()


def assert_same_lists(got: tuple, want: tuple) -> None:
    """Same count per user and the same films and score bits in each list (past its count a
    row is padding, which only says "no film")."""
    films, values, count = got[:3]
    np.testing.assert_array_equal(count, want[2])
    valid = np.arange(films.shape[1])[None, :] < count[:, None]
    np.testing.assert_array_equal(films[valid], want[0][valid])
    np.testing.assert_array_equal(values[valid], want[1][valid])


@pytest.mark.parametrize("dim", [64, 5])
def test_reference_dot_is_one_fixed_order_whatever_the_batch(dim):
    rng = np.random.default_rng(0)
    user = rng.normal(size=(5, dim)).astype(np.float32)
    films = rng.normal(size=(40, dim)).astype(np.float32)
    terms = user[:, None, :] * films[None, :, :]  # float32 products
    terms = np.concatenate(
        [terms, np.zeros((5, 40, (1 << (dim - 1).bit_length()) - dim), np.float32)], axis=2
    )
    while terms.shape[2] > 1:  # float32 pairwise sums: k + k + W/2
        terms = terms[:, :, : terms.shape[2] // 2] + terms[:, :, terms.shape[2] // 2 :]
    expected = terms[:, :, 0]
    vectors = torch.from_numpy(films)
    dense = pairwise_dot(torch.from_numpy(user), vectors[None]).numpy()
    assert np.array_equal(dense, expected)
    pick = torch.from_numpy(rng.integers(0, 40, (5, 7)))
    gathered = pairwise_dot(torch.from_numpy(user), vectors[pick]).numpy()
    assert np.array_equal(gathered, np.take_along_axis(expected, pick.numpy(), axis=1))
    alone = pairwise_dot(torch.from_numpy(user[3:4]), vectors[None]).numpy()
    assert np.array_equal(alone[0], expected[3])
    assert not np.array_equal(expected, user @ films.T)  # the BLAS product has other bits


@pytest.mark.parametrize("count", [1, 5, 40, 64, 200])
def test_block_maxima_find_the_best_values(count):
    rng = np.random.default_rng(5)
    approx = torch.from_numpy(rng.integers(0, 30, (6, 8 * BLOCK)).astype(np.float32))  # many ties
    approx[0, 5 * BLOCK :] = -torch.inf
    approx[1, :] = -torch.inf
    approx[2, :BLOCK] = 100.0  # the best all in one block
    approx[3, 17] = float("nan")
    values, columns, has_nan = best_approximate(approx, count)
    want = torch.topk(approx, min(count, approx.shape[1]), dim=1).values
    assert has_nan.tolist() == [False, False, False, True, False, False]
    sane = ~has_nan
    assert torch.equal(values[sane].sort(dim=1, descending=True).values, want[sane])
    assert torch.equal(values[sane, -1], want[sane, -1])  # the smallest last
    assert torch.equal(approx.gather(1, columns), values)
    assert all(len(set(row)) == len(row) for row in columns.tolist())


def test_fast_rows_equal_exact_rows_with_ties_and_seen_films():
    rng = np.random.default_rng(1)
    n_films, n = 600, 10
    model = tied_model(rng, n_films, group=40, distinct=20)
    csr = random_csr(rng, 3 * CPU_CHUNK_USERS + 5, n_films, most=40)
    movie_ids, user_ids = np.arange(n_films) * 3 + 1, np.arange(csr.n_users) + 7
    rows = np.flatnonzero(csr.counts > 0)
    with torch_threads(2):  # two threads given: the next chunk's inputs are built on a second one
        fast = BatchScorer(model, movie_ids, csr.film_counts(), "v", n, CPU)
    exact = BatchScorer(model, movie_ids, csr.film_counts(), "v", n, CPU, exact=True)
    assert fast._ahead is not None and exact._ahead is None
    got, want = fast.model_rows(csr, rows, user_ids), exact.model_rows(csr, rows, user_ids)
    assert got.equals(want)  # same users, ranks, films and score bits
    lists = want.to_pandas().groupby("user_id").score
    assert lists.apply(lambda s: s.duplicated().any()).mean() > 0.3  # many lists hold exact ties
    # both outcomes of the proof happen: ties across the cut are ranked exactly, the rest certified
    assert 0 < fast.uncertified_users < len(rows)
    # a user who has seen most of the films gets fewer than n of them, never a seen one
    heavy = np.zeros(n_films, bool)
    heavy[: n_films - 3] = True
    crowded = RatingsCSR.from_entries(np.zeros(n_films - 3, np.int64), np.flatnonzero(heavy), 1, n_films,
                                      np.full(n_films - 3, 5.0, np.float32))  # fmt: skip
    one = fast.model_rows(crowded, np.array([0]), np.array([1]))
    assert one.equals(exact.model_rows(crowded, np.array([0]), np.array([1])))
    assert sorted(one.column("movie_id").to_pylist()) == sorted(movie_ids[~heavy].tolist())


def test_an_error_on_the_helper_thread_reaches_the_caller():
    rng = np.random.default_rng(9)
    model = tied_model(rng, 100, group=10, distinct=10)
    csr = random_csr(rng, 2 * CPU_CHUNK_USERS + 3, 100, most=10)
    csr.indices[-1] = 100  # a film outside the model's vocabulary, in the last chunk
    with torch_threads(2):
        scorer = BatchScorer(model, np.arange(100), csr.film_counts(), "v", 5, CPU)
    with pytest.raises(RuntimeError, match="valid range"):
        scorer.model_rows(csr, np.arange(csr.n_users), np.arange(csr.n_users))
    assert torch.get_num_threads() == 1  # the caller's thread count is back


def cancelling_case(rng: np.random.Generator, n_users: int, n_films: int):
    """Films whose dot products with the users cancel a large common part: the BLAS sum and
    the reference sum round differently by far more than the films differ, so ranking by
    the fast product reorders films across the candidate cut."""
    dim = 64
    sign = np.where(np.arange(dim) % 2 == 0, 1.0, -1.0)
    films = (1e3 * sign[None, :] + rng.normal(0, 1e-3, (n_films, dim))).astype(np.float32)
    users = rng.normal(0, 1, (n_users, dim)).astype(np.float32)
    tables = FilmTables(torch.from_numpy(films), torch.zeros(n_films))
    term = torch.zeros(n_users, n_films)
    term[:, :5] = 0.25  # a few films lifted by the term
    seen_rows = torch.from_numpy(np.repeat(np.arange(n_users), 30))
    seen_films = torch.from_numpy(
        np.concatenate([rng.choice(n_films, 30, replace=False) for _ in range(n_users)])
    )
    return tables, torch.from_numpy(users), term, seen_rows, seen_films


def test_the_proof_catches_candidates_the_fast_product_misranks():
    rng = np.random.default_rng(2)
    n_users, n_films, n, margin = 24, 3000, 10, 4
    tables, users, term, seen_rows, seen_films = cancelling_case(rng, n_users, n_films)
    films, values, count = exact_top_n(
        users, tables.vectors, tables.bias, term, seen_rows, seen_films, n
    )

    approx = tables.approximate(users, term)
    approx[seen_rows, seen_films] = -torch.inf
    seen_count = distinct_seen(seen_rows, seen_films, n_users, n_films)
    cand_films, _, _, certified = candidate_top_n(
        tables, users, term, approx, seen_count, n, margin
    )
    wrong = (cand_films != films).any(axis=1)
    assert wrong.any()  # without the proof, some users would get another list
    assert not (wrong & certified).any()  # and the proof never vouches for one of them

    got_films, got_values, got_count, redone = certified_top_n(
        tables, users, term, seen_rows, seen_films, n, margin
    )
    assert redone >= wrong.sum()
    assert_same_lists((got_films, got_values, got_count), (films, values, count))


def test_non_finite_scores_go_to_the_exact_path():
    rng = np.random.default_rng(3)
    tables = FilmTables(
        torch.from_numpy(rng.normal(size=(50, 64)).astype(np.float32)), torch.zeros(50)
    )
    users = torch.from_numpy(rng.normal(size=(3, 64)).astype(np.float32))
    term = torch.zeros(3, 50)
    term[1, 7] = float("nan")
    term[2, 9] = float("inf")
    seen_rows, seen_films = torch.tensor([0, 1]), torch.tensor([3, 4])
    got = certified_top_n(tables, users, term, seen_rows, seen_films, 5, margin=2)
    want = exact_top_n(users, tables.vectors, tables.bias, term, seen_rows, seen_films, 5)
    assert got[3] == 1  # the NaN user; +inf is a score like another (the proof holds for the rest)
    assert_same_lists(got, want)


@pytest.mark.parametrize(("n", "seen"), [(45, [1, 2]), (10, [])])
def test_a_film_whose_blas_sum_overflows_is_still_ranked(n, seen):
    """Film 7's products cancel in the reference's pairwise order but overflow in a running
    sum: OpenBLAS scores it -inf like a seen film (NaN where a BLAS adds +inf and -inf
    partial sums, which the NaN rule covers); its reference score is the largest bias. Users
    with few films left (every other film a candidate) or with biases far apart (the bound
    alone would separate them) must not lose it."""
    films = np.random.default_rng(8).normal(0, 0.1, (50, 64)).astype(np.float32)
    films[7, :32], films[7, 32:] = -1.7e19, 1.7e19
    bias = torch.arange(50, dtype=torch.float32) * 1e36
    bias[7] = 1e38
    tables = FilmTables(torch.from_numpy(films), bias)
    users, term = torch.full((3, 64), 1.8e19), torch.zeros(3, 50)
    seen_rows = torch.arange(3).repeat_interleave(len(seen))
    seen_films = torch.tensor(seen * 3, dtype=torch.int64)
    with np.errstate(over="ignore", invalid="ignore"):
        assert not torch.isfinite(tables.approximate(users, term)[:, 7]).any()
        want = exact_top_n(users, tables.vectors, tables.bias, term, seen_rows, seen_films, n)
        got = certified_top_n(tables, users, term, seen_rows, seen_films, n, margin=3)
    assert (want[0][:, 0] == 7).all()
    assert got[3] == 3
    assert_same_lists(got, want)


@pytest.mark.parametrize("n", [1, 49, 50, 80])
def test_lists_as_long_as_the_vocabulary(n):
    rng = np.random.default_rng(4)
    tables = FilmTables(torch.from_numpy(rng.normal(size=(50, 64)).astype(np.float32)),
                        torch.from_numpy(rng.normal(size=50).astype(np.float32)))  # fmt: skip
    users = torch.from_numpy(rng.normal(size=(4, 64)).astype(np.float32))
    term = torch.zeros(4, 50)
    seen_rows, seen_films = (
        torch.tensor([0, 0, 2, 2]),
        torch.tensor([1, 2, 3, 3]),
    )  # one entry twice
    got = certified_top_n(tables, users, term, seen_rows, seen_films, n, margin=3)
    want = exact_top_n(users, tables.vectors, tables.bias, term, seen_rows, seen_films, n)
    assert_same_lists(got, want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (CI never has one)")
def test_cuda_writes_the_exact_rows_and_the_cpu_reference():
    """On CUDA (bf16 autocast encode, the product at full fp32) the fast path writes the exact
    path's rows, and the reference score of given embeddings has the CPU's bits."""
    cuda = torch.device("cuda")
    rng = np.random.default_rng(6)
    n_films, n = 600, 10
    csr = random_csr(rng, 300, n_films, most=40)
    movie_ids, user_ids = np.arange(n_films) + 1, np.arange(csr.n_users) + 1
    rows = np.flatnonzero(csr.counts > 0)
    model = tied_model(np.random.default_rng(7), n_films, 40, 20).to(cuda)
    fast = BatchScorer(model, movie_ids, csr.film_counts(), "v", n, cuda, bf16=True)
    exact = BatchScorer(model, movie_ids, csr.film_counts(), "v", n, cuda, bf16=True, exact=True)
    assert fast.model_rows(csr, rows, user_ids).equals(exact.model_rows(csr, rows, user_ids))
    assert 0 < fast.uncertified_users < len(rows)

    tables, users, term, seen_rows, seen_films = cancelling_case(rng, 24, 3000)
    want = exact_top_n(users, tables.vectors, tables.bias, term, seen_rows, seen_films, n)
    on_cuda = FilmTables(tables.vectors.to(cuda), tables.bias.to(cuda))
    got = certified_top_n(
        on_cuda, users.to(cuda), term.to(cuda), seen_rows.to(cuda), seen_films.to(cuda), n, 4
    )
    assert_same_lists(got, want)


@pytest.mark.parametrize("job", ["score.py", "score_spark.py"])
def test_both_scoring_jobs_take_exact_from_the_command_line(job):
    """``--exact`` (check the fast path against ranking every film) reaches ``ScoreConfig``."""
    from recsys_core.entrypoint import JobArgumentParser
    from recsys_core.scoring.options import add_score_arguments, score_config

    parser = JobArgumentParser(description=job)
    add_score_arguments(parser)
    base = ["--warehouse", "/tmp/w", "--ds", "2024-01-01"]
    assert score_config(parser.parse_args(base)).exact is False
    assert score_config(parser.parse_args([*base, "--exact"])).exact is True
    source = (Path(__file__).resolve().parents[1] / "jobs" / job).read_text()
    assert "add_score_arguments(parser" in source and "--exact" in source
