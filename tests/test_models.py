"""The two autoencoders with real torch on tiny tensors: shapes, masking, the loss."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from recsys_core.models import FilmAE, FilmAEConfig, UserAE, UserAEConfig
from recsys_core.models.film_ae import FilmBatch
from recsys_core.models.user_ae import UserBatch

torch.set_num_threads(1)


def films(n: int = 6, n_genome: int = 5, n_genres: int = 3, with_genome: list[int] | None = None) -> FilmBatch:
    g = torch.Generator().manual_seed(0)
    has = torch.zeros(n)
    has[with_genome if with_genome is not None else list(range(0, n, 2))] = 1.0
    genome = torch.rand(n, n_genome, generator=g) * has.unsqueeze(1)
    genres = (torch.rand(n, n_genres, generator=g) > 0.5).float()
    return FilmBatch(genome, has, genres, torch.randn(n, 3, generator=g))


def test_film_ae_shapes():
    torch.manual_seed(0)
    model = FilmAE(5, 3, 3, FilmAEConfig(embedding_dim=4, hidden_dim=8))
    emb, (genome, genres, numeric) = model(films())
    assert emb.shape == (6, 4)
    assert genome.shape == (6, 5) and genres.shape == (6, 3) and numeric.shape == (6, 3)
    assert model.loss(films()).ndim == 0


def test_film_without_genome_gives_exactly_zero_genome_loss_and_gradient():
    torch.manual_seed(0)
    model = FilmAE(5, 3, 3, FilmAEConfig(embedding_dim=4, hidden_dim=8, dropout=0.0))
    batch = films(with_genome=[])
    terms = model.loss_terms(batch)
    assert terms["genome"].item() == 0.0
    assert terms["genres"].item() > 0.0
    terms["genome"].backward()
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in model.parameters())


def test_genome_loss_counts_only_films_with_genome():
    torch.manual_seed(0)
    model = FilmAE(5, 3, 3, FilmAEConfig(embedding_dim=4, hidden_dim=8, dropout=0.0)).eval()
    batch = films(with_genome=[1, 4])
    _, (logits, _, _) = model(batch)
    expected = F.binary_cross_entropy_with_logits(logits[[1, 4]], batch.genome[[1, 4]])
    assert model.loss_terms(batch)["genome"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_film_ae_without_genome_or_genres_in_the_data():
    model = FilmAE(0, 0, 3, FilmAEConfig(embedding_dim=4, hidden_dim=8))
    batch = FilmBatch(torch.zeros(4, 0), torch.zeros(4), torch.zeros(4, 0), torch.randn(4, 3))
    terms = model.loss_terms(batch)
    assert terms["genome"].item() == 0.0 and terms["genres"].item() == 0.0
    assert model.encode(batch).shape == (4, 4)


def user_batch() -> UserBatch:
    # user 0 rated films 1, 3; user 1 rated nothing; user 2 rated films 0, 2, 4
    indices = torch.tensor([1, 3, 0, 2, 4])
    return UserBatch(
        indices=indices,
        offsets=torch.tensor([0, 2, 2]),
        weights=torch.ones(5),
        rows=torch.tensor([0, 0, 2, 2, 2]),
    )


@pytest.mark.parametrize("content_dim", [0, 3])
def test_user_ae_shapes(content_dim):
    torch.manual_seed(0)
    content = torch.randn(5, content_dim) if content_dim else None
    model = UserAE(5, content, UserAEConfig(embedding_dim=4, hidden_dim=8))
    batch = user_batch()
    assert model.encode(batch).shape == (3, 4)
    assert model.film_vectors().shape == (5, 4)
    logits = model(batch)
    assert logits.shape == (3, 5)
    assert torch.allclose(logits, model.encode(batch) @ model.film_vectors().T + model.film_bias)


def test_film_vectors_use_the_content_projection():
    torch.manual_seed(0)
    content = torch.randn(5, 3)
    model = UserAE(5, content, UserAEConfig(embedding_dim=4, hidden_dim=8))
    with torch.no_grad():
        model.free.zero_()
    assert torch.allclose(model.film_vectors(), content @ model.content_proj.weight.T)


def test_multinomial_nll_equals_dense_log_softmax_reference():
    torch.manual_seed(0)
    logits = torch.randn(3, 5)
    batch = user_batch()
    dense = torch.zeros(3, 5)
    dense[batch.rows, batch.indices] = 1.0
    reference = -(F.log_softmax(logits, dim=1) * dense).sum(dim=1).mean()
    assert UserAE.multinomial_nll(logits, batch).item() == pytest.approx(reference.item(), rel=1e-6)


def test_weighted_targets_match_the_dense_reference_exact_and_sampled():
    """Target weights (e.g. 1 for liked films, 0 for the others) weigh each entry's log-probability."""
    torch.manual_seed(0)
    model = UserAE(5, torch.randn(5, 3), UserAEConfig(embedding_dim=4, hidden_dim=8))
    batch = user_batch()
    batch.targets = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.0])
    dense = torch.zeros(3, 5)
    dense[batch.rows, batch.indices] = batch.targets
    logits = model(batch)
    reference = -(F.log_softmax(logits, dim=1) * dense).sum(dim=1).mean()
    assert UserAE.multinomial_nll(logits, batch).item() == pytest.approx(reference.item(), rel=1e-6)
    assert model.sampled_multinomial_nll(batch, torch.arange(5)).item() == pytest.approx(reference.item(), rel=1e-5)
    unweighted = -(F.log_softmax(logits, dim=1) * (dense != 0).float()).sum(dim=1).mean()
    assert reference.item() != pytest.approx(unweighted.item(), rel=1e-3)


def test_sampled_softmax_is_exact_when_every_film_is_drawn_once():
    """With negatives = the whole vocabulary once, the estimated normalizer is the exact one."""
    torch.manual_seed(0)
    model = UserAE(12, torch.randn(12, 3), UserAEConfig(embedding_dim=4, hidden_dim=8))
    batch = UserBatch(
        indices=torch.tensor([0, 3, 5, 3, 7, 11]), offsets=torch.tensor([0, 3, 5]),
        weights=torch.ones(6), rows=torch.tensor([0, 0, 0, 1, 1, 2]),
    )  # fmt: skip
    exact = UserAE.multinomial_nll(model(batch), batch)
    sampled = model.sampled_multinomial_nll(batch, torch.arange(12))
    assert sampled.item() == pytest.approx(exact.item(), rel=1e-5)
    fewer = model.sampled_multinomial_nll(batch, torch.tensor([1, 2, 4, 6]))
    assert torch.isfinite(fewer) and fewer.item() != pytest.approx(exact.item(), rel=1e-3)  # an estimate
    # only the batch's films and the drawn ones get a gradient
    fewer.backward()
    assert model.free.grad[[0, 1, 3]].abs().sum() > 0 and model.free.grad[[8, 9, 10]].abs().sum() == 0
