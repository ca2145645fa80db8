"""The item-item term: its closed-form fit (pruned EASE on liked ratings) and its scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys_core.data.csr import RatingsCSR
from recsys_core.models import UserAE, UserAEConfig
from recsys_core.models.ease import ease_weights, gram, precision_matrix
from recsys_core.models.item_item import ItemItemTerm
from recsys_core.models.user_ae import UserBatch
from recsys_core.training.item_item import ItemItemConfig, fit_item_item, most_liked_films

torch.set_num_threads(1)


def random_csr(n_users: int = 30, n_films: int = 12, seed: int = 0) -> RatingsCSR:
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 8, n_users)
    films = [np.sort(rng.choice(n_films - 2, c, replace=False)) for c in counts]  # the last 2: never rated
    indices = np.concatenate(films).astype(np.int64)
    return RatingsCSR(
        np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), indices,
        rng.choice([1.0, 3.5, 4.0, 5.0], len(indices)).astype(np.float32), np.zeros(len(indices), np.int64), n_films,
    )  # fmt: skip


def liked_dense(csr: RatingsCSR, liked: float = 4.0) -> np.ndarray:
    x = np.zeros((csr.n_users, csr.n_films))
    keep = csr.ratings >= liked
    x[csr.entry_rows()[keep], csr.indices[keep]] = 1.0
    return x


def test_most_liked_films_and_their_gram_in_blocks():
    csr = random_csr()
    liked = csr.select_entries(csr.ratings >= 4.0)
    x = liked_dense(csr)
    counts = x.sum(axis=0)
    films = most_liked_films(liked, 6)
    assert len(films) == 6 and list(films) == sorted(films)
    assert counts[films].min() >= np.delete(counts, films).max()  # no left-out film has more likes
    assert len(most_liked_films(liked, 100)) == int((counts > 0).sum())  # never a film without a like
    g = gram(liked, films, block=4)  # two blocks of 4 and 2 films
    np.testing.assert_array_equal(g.numpy(), (x[:, films].T @ x[:, films]).astype(np.float32))


def test_ease_weights_are_each_films_ridge_regression_on_the_others():
    """B's column j is the ridge regression of film j on every other film (Steck 2019)."""
    x = torch.from_numpy(liked_dense(random_csr(seed=1))[:, :10])
    g, lam = x.T @ x, 3.0
    b = ease_weights(g.float(), lam).double()
    assert torch.all(torch.diagonal(b) == 0)
    for j in range(10):
        others = [i for i in range(10) if i != j]
        reference = torch.linalg.solve(g[others][:, others] + lam * torch.eye(9, dtype=g.dtype), g[others, j])
        torch.testing.assert_close(b[others, j], reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_precision_matrix_inverts_through_cholesky_and_falls_back_to_lu(dtype):
    x = torch.from_numpy(liked_dense(random_csr(seed=2))[:, :12]).to(dtype)
    g = x.T @ x
    before = g.clone()
    threads = torch.get_num_threads()
    p = precision_matrix(g, 2.0, dtype)
    eye = torch.eye(12, dtype=dtype)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close((g + 2.0 * eye) @ p, eye, atol=tol, rtol=0)
    assert torch.equal(g, before)  # the penalty added in place is taken back
    # not positive definite (a negative penalty): the Cholesky factor fails, LU still inverts
    m = g - (torch.linalg.eigvalsh(g.double()).max().item() / 2) * eye
    torch.testing.assert_close(m @ precision_matrix(m, 0.0, dtype), eye, atol=tol * 100, rtol=0)
    assert torch.get_num_threads() == threads  # the one-thread inverse gives the count back
    bad = g.clone()
    bad[3, 1] = float("nan")  # NaN in the triangle the factor reads
    with pytest.raises(ValueError, match="non-finite"):
        precision_matrix(bad, 2.0, dtype)
    with pytest.raises(ValueError, match="non-finite"):
        precision_matrix(g, float("nan"), dtype)


def test_fit_keeps_each_films_strongest_weights_and_none_for_unfitted_films():
    csr = random_csr(seed=2)
    config = ItemItemConfig(l2=2.0, max_films=7)
    fit = fit_item_item(csr, 3, config, liked_rating=4.0)
    liked = csr.select_entries(csr.ratings >= 4.0)
    films = most_liked_films(liked, 7)
    dense = ease_weights(gram(liked, films), 2.0)
    assert fit.films == 7 and fit.index.shape == fit.weight.shape == (12, 3)
    for row, film in enumerate(films):
        kept = dense[row].abs().sort(descending=True).values[:3]
        torch.testing.assert_close(fit.weight[film].abs().sort(descending=True).values, kept)
        torch.testing.assert_close(fit.weight[film], dense[row, np.searchsorted(films, fit.index[film].numpy())])
    others = np.setdiff1d(np.arange(12), films)
    assert torch.all(fit.weight[others] == 0)


def test_item_term_scores_are_the_blended_sparse_product():
    torch.manual_seed(0)
    term = ItemItemTerm(6, 2)
    index = torch.tensor([[1, 2], [0, 2], [0, 1], [4, 5], [3, 3], [0, 0]])
    weight = torch.randn(6, 2)
    term.set(index, weight, blend=2.5)
    dense_w = torch.zeros(6, 6).index_put_((torch.arange(6).repeat_interleave(2), index.reshape(-1)),
                                           weight.reshape(-1), accumulate=True)  # fmt: skip
    rows, films = torch.tensor([0, 0, 0, 2, 2]), torch.tensor([0, 3, 4, 1, 5])
    liked = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0])
    x = torch.zeros(3, 6)
    x[rows, films] = liked
    torch.testing.assert_close(term.scores(rows, films, liked, 3), 2.5 * x @ dense_w)
    weighted = torch.tensor([0.5, 1.0, 0.0, 0.25, 2.0])  # per-entry input weights scale each film's row
    x[rows, films] = weighted
    torch.testing.assert_close(term.scores(rows, films, weighted, 3), 2.5 * x @ dense_w)
    term.set_blend(0.0)
    assert not term.active


def test_user_ae_adds_the_item_term_only_when_blended():
    torch.manual_seed(0)
    model = UserAE(5, torch.randn(5, 3), UserAEConfig(embedding_dim=4, hidden_dim=8, item_neighbours=2))
    batch = UserBatch(
        indices=torch.tensor([1, 3, 0, 2, 4]), offsets=torch.tensor([0, 2, 2]), weights=torch.ones(5),
        rows=torch.tensor([0, 0, 2, 2, 2]), ratings=torch.tensor([4.5, 3.0, 4.0, 5.0, 2.0]),
        ages=torch.tensor([1, 0, 2, 1, 0]),
    )  # fmt: skip
    liked = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    model.item_item.set(torch.tensor([[1, 2], [0, 2], [0, 1], [4, 2], [3, 0]]), torch.randn(5, 2))
    with torch.no_grad():
        assert torch.equal(model(batch), model.ae_logits(batch))  # blend 0: the AE alone
        model.item_item.set_blend(4.0)
        extra = model.item_item.scores(batch.rows, batch.indices, liked, 3)
        assert extra.abs().sum() > 0
        torch.testing.assert_close(model(batch), model.ae_logits(batch) + extra)
        model.config.item_half_life = 2.0  # liked entries of ages 1, 2, 1 weigh 2^-0.5, 2^-1, 2^-0.5
        decayed = model.item_item.scores(batch.rows, batch.indices, liked * torch.exp2(-batch.ages / 2.0), 3)
        torch.testing.assert_close(model(batch), model.ae_logits(batch) + decayed)
        assert not torch.allclose(decayed, extra)
        model.config.item_feedback, model.config.item_half_life = "all", None
        every = model.item_item.scores(batch.rows, batch.indices, torch.ones(5), 3)
        torch.testing.assert_close(model(batch), model.ae_logits(batch) + every)
    with pytest.raises(ValueError, match="item-item term of shape"):
        model.item_item.set(torch.zeros(5, 3, dtype=torch.int64), torch.zeros(5, 3))


def test_item_term_is_added_in_float32_to_bf16_scores():
    """On CUDA the AE's logits come out of bf16 autocast; the term is added in float32."""
    torch.manual_seed(0)
    model = UserAE(5, None, UserAEConfig(embedding_dim=4, hidden_dim=8, item_neighbours=2))
    model.item_item.set(torch.tensor([[1, 2], [0, 2], [0, 1], [4, 2], [3, 0]]), torch.randn(5, 2), blend=3.0)
    batch = UserBatch(
        indices=torch.tensor([1, 3, 0, 2]), offsets=torch.tensor([0, 2]), weights=torch.ones(4),
        rows=torch.tensor([0, 0, 1, 1]), ratings=torch.full((4,), 4.0), ages=torch.zeros(4, dtype=torch.int64),
    )  # fmt: skip
    logits = torch.randn(2, 5).to(torch.bfloat16)
    out = model.add_item_scores(logits, batch)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, logits.float() + model.item_item.scores(batch.rows, batch.indices, torch.ones(4), 2))
