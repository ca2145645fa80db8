"""Stage 1 of a training run: the film autoencoder, whose embeddings the user AE's decoder uses."""

from __future__ import annotations

import logging

import numpy as np
import torch

from recsys_core.data.features import FilmFeatures
from recsys_core.device import autocast
from recsys_core.models.film_ae import FilmAE, FilmBatch
from recsys_core.reproducible import warm_up_cpu_math
from recsys_core.training.config import TrainConfig
from recsys_core.training.optim import adamw

log = logging.getLogger(__name__)


def film_batch(films: FilmFeatures) -> FilmBatch:
    """Every film's content (genome, its mask, genres, numeric features) as one batch."""
    return FilmBatch(
        torch.from_numpy(films.genome),
        torch.from_numpy(films.has_genome.astype(np.float32)),
        torch.from_numpy(films.genres),
        torch.from_numpy(films.numeric),
    )


def train_film_ae(
    films: FilmFeatures, config: TrainConfig, device: torch.device, bf16: bool = False
) -> tuple[FilmAE, torch.Tensor, float]:
    """Train the film AE for ``config.film_epochs`` seeded epochs.

    Returns (model, (n_films, film.embedding_dim) standardized film embeddings on the CPU,
    last epoch's mean loss).
    """
    warm_up_cpu_math()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    data = film_batch(films).to(device)
    model = FilmAE(films.genome.shape[1], films.genres.shape[1], films.numeric.shape[1], config.film).to(device)
    optimizer = adamw(model.parameters(), config.film_lr, config.weight_decay)
    n, last = len(data), float("nan")
    for epoch in range(config.film_epochs):
        model.train()
        order = torch.randperm(n, generator=generator).to(device)
        total = 0.0
        for lo in range(0, n, config.film_batch_size):
            with autocast(device, bf16):
                loss = model.loss(data[order[lo : lo + config.film_batch_size]])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * min(config.film_batch_size, n - lo)
        last = total / max(n, 1)
        log.debug("film AE epoch %d loss %.4f", epoch + 1, last)
    model.eval()
    with torch.no_grad():
        embeddings = model.encode(data).float().cpu()
    log.info("film AE: %d films, %d epochs, final loss %.4f", n, config.film_epochs, last)
    return model, standardize_columns(embeddings), last


def standardize_columns(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per column, so the user AE's projection starts well scaled."""
    if x.shape[0] < 2:
        return x - x.mean(dim=0, keepdim=True)
    return (x - x.mean(dim=0, keepdim=True)) / x.std(dim=0, keepdim=True).clamp(min=1e-6)
