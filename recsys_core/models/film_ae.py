"""Film autoencoder: content features -> film embedding -> reconstruction.

The input row of a film is ``[genome | has_genome | genres | numeric]``. A film without a
genome gets zeros in the genome slots and ``has_genome = 0``, so the encoder can tell
"missing" from "all tags irrelevant"; its genome reconstruction is masked out of the loss
(exactly zero contribution and zero gradient), never pulled towards zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class FilmAEConfig:
    embedding_dim: int = 32
    hidden_dim: int = 256
    dropout: float = 0.1
    genome_weight: float = 1.0
    genre_weight: float = 1.0
    numeric_weight: float = 1.0


@dataclass
class FilmBatch:
    """Content features of some films, as float32 tensors on one device."""

    genome: torch.Tensor  # (n, n_genome), zeros where the film has none
    has_genome: torch.Tensor  # (n,) 1.0 / 0.0
    genres: torch.Tensor  # (n, n_genres) multi-hot
    numeric: torch.Tensor  # (n, n_numeric) standardized

    def to(self, device: torch.device | str) -> FilmBatch:
        return FilmBatch(*(t.to(device) for t in (self.genome, self.has_genome, self.genres, self.numeric)))

    def __getitem__(self, rows: torch.Tensor | slice) -> FilmBatch:
        return FilmBatch(self.genome[rows], self.has_genome[rows], self.genres[rows], self.numeric[rows])

    def __len__(self) -> int:
        return self.genome.shape[0]


class FilmAE(nn.Module):
    def __init__(self, n_genome: int, n_genres: int, n_numeric: int, config: FilmAEConfig | None = None):
        super().__init__()
        self.config = config or FilmAEConfig()
        self.n_genome, self.n_genres, self.n_numeric = n_genome, n_genres, n_numeric
        c = self.config
        n_in = n_genome + 1 + n_genres + n_numeric
        self.encoder = nn.Sequential(
            nn.Dropout(c.dropout),
            nn.Linear(n_in, c.hidden_dim),
            nn.Tanh(),
            nn.Linear(c.hidden_dim, c.embedding_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(c.embedding_dim, c.hidden_dim),
            nn.Tanh(),
            nn.Linear(c.hidden_dim, n_genome + n_genres + n_numeric),
        )

    def encode(self, batch: FilmBatch) -> torch.Tensor:
        x = torch.cat([batch.genome, batch.has_genome.unsqueeze(1), batch.genres, batch.numeric], dim=1)
        return self.encoder(x)

    def decode(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(genome logits, genre logits, numeric values)."""
        out = self.decoder(embedding)
        g, r = self.n_genome, self.n_genres
        return out[:, :g], out[:, g : g + r], out[:, g + r :]

    def forward(self, batch: FilmBatch) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        embedding = self.encode(batch)
        return embedding, self.decode(embedding)

    def loss_terms(self, batch: FilmBatch) -> dict[str, torch.Tensor]:
        """Per-part reconstruction losses, each a mean over the films it applies to.

        Genome relevance lies in [0, 1] and is reconstructed through a sigmoid; a film
        without genome is multiplied out of the genome term (the sum over films with genome
        is divided by their count, at least 1).
        """
        _, (genome_logits, genre_logits, numeric) = self(batch)
        zero = genome_logits.new_zeros(())
        mask = batch.has_genome.unsqueeze(1)
        if self.n_genome:
            per_value = F.binary_cross_entropy_with_logits(genome_logits, batch.genome, reduction="none")
            genome = (per_value * mask).sum() / (mask.sum().clamp(min=1.0) * self.n_genome)
        else:
            genome = zero
        genres = F.binary_cross_entropy_with_logits(genre_logits, batch.genres) if self.n_genres else zero
        numeric_loss = F.mse_loss(numeric, batch.numeric) if self.n_numeric else zero
        return {"genome": genome, "genres": genres, "numeric": numeric_loss}

    def loss(self, batch: FilmBatch) -> torch.Tensor:
        t, c = self.loss_terms(batch), self.config
        return c.genome_weight * t["genome"] + c.genre_weight * t["genres"] + c.numeric_weight * t["numeric"]
