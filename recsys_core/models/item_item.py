"""The item-item term beside the user AE: a sparse linear map from a user's films (their
liked or all ratings, recency-weighted: ``recsys_core.models.user_ae.item_inputs``) to
scores over the vocabulary (each film keeps its ``k`` strongest weights).

A rank-64 decoder scores films through a narrow user embedding, so it blurs the specific
"liked X, so Y" links that a full-rank item-item model keeps; adding this term to the AE's
logits at scoring time restores them. The weights are fitted in closed form before the
AE's epochs (``recsys_core.training.item_item``, so the training time cap covers the fit);
``blend`` (chosen on the validation users after early stopping) scales the term against the
AE's logits, and 0 switches it off.
"""

from __future__ import annotations

import torch
from torch import nn


class ItemItemTerm(nn.Module):
    """``index`` / ``weight`` (n_films, k): film i's ``k`` target films and their weights;
    ``blend`` a scalar. All three are buffers, saved with the user AE's weights."""

    def __init__(self, n_films: int, k: int):
        super().__init__()
        self.n_films, self.k = n_films, k
        self.register_buffer("index", torch.zeros((n_films, k), dtype=torch.int64))
        self.register_buffer("weight", torch.zeros((n_films, k)))
        self.register_buffer("blend", torch.zeros(()))

    def set(self, index: torch.Tensor, weight: torch.Tensor, blend: float | None = None) -> None:
        """Copy in fitted ``index`` / ``weight`` (and ``blend``); raises ValueError on a shape mismatch."""
        if index.shape != self.index.shape or weight.shape != self.weight.shape:
            raise ValueError(f"item-item term of shape {tuple(index.shape)} for {tuple(self.index.shape)}")
        self.index.copy_(index)
        self.weight.copy_(weight)
        if blend is not None:
            self.set_blend(blend)

    def set_blend(self, blend: float) -> None:
        self.blend.fill_(float(blend))

    @property
    def active(self) -> bool:
        return self.k > 0 and float(self.blend) != 0.0

    def add_to(self, scores: torch.Tensor, rows: torch.Tensor, films: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Add ``blend * sum_i x_i W[i]`` for the entries (rows, films, inputs x) to the float32
        (n_rows, n_films) ``scores`` in place (no second dense matrix); returns ``scores``.
        Entries with input 0 cost nothing."""
        if scores.dtype != torch.float32 or not scores.is_contiguous():
            raise ValueError(f"scores must be contiguous float32, got {scores.dtype}")
        keep = inputs > 0
        rows, films, inputs = rows[keep], films[keep], inputs[keep].float()
        target = (rows[:, None] * self.n_films + self.index[films]).reshape(-1)
        values = (self.weight[films] * (self.blend * inputs)[:, None]).reshape(-1)
        scores.view(-1).index_add_(0, target, values)
        return scores

    def scores(self, rows: torch.Tensor, films: torch.Tensor, inputs: torch.Tensor, n_rows: int) -> torch.Tensor:
        """(n_rows, n_films) the term alone."""
        out = torch.zeros((n_rows, self.n_films), dtype=torch.float32, device=self.weight.device)
        return self.add_to(out, rows, films, inputs)
