"""User autoencoder (Mult-DAE style) whose decoder is tied to the film embeddings.

Encoder: the user's rated films, L2-normalized and (in training) randomly dropped, are
summed through an ``nn.EmbeddingBag`` (a sparse first layer: no dense users x films
matrix is ever built), then ``tanh`` and a linear map to the user embedding.

Decoder: ``score(user, film) = user_emb . film_vec[film] + film_bias[film]`` where
``film_vec = free[film] + content_proj(film_content[film])``. ``film_content`` is the
film-AE embedding (a frozen buffer), so films with few ratings borrow from their content
and users and films live in one space. Training maximizes the multinomial log-likelihood
of the user's films under a softmax over the whole vocabulary: exactly
(``multinomial_nll``), or with the softmax normalizer estimated from the batch's films plus
uniformly sampled others (``sampled_multinomial_nll``), which is what makes a CPU epoch over
the full release affordable (see its docstring).

Recommendation scores (``forward``) add to these logits the item-item term (``item_item``,
fitted before the AE's epochs and blended in after them, see
``recsys_core.models.item_item``) and what was popular at the user's time (``recent``, see
``recsys_core.models.recent_popularity``); training fits the logits alone (``ae_logits``).

``user_batch`` turns rows of a ``RatingsCSR`` into a ``UserBatch`` (training, validation and
scoring all build batches with it); ``encode_users`` gives every user's embedding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from recsys_core.data.csr import LIKED_RATING, RatingsCSR, gather_entries
from recsys_core.data.recency import entry_ages
from recsys_core.models.item_item import ItemItemTerm
from recsys_core.models.recent_popularity import RecentPopularity

ITEM_FEEDBACK = ("liked", "all")  # the item-item term's input: liked ratings or every rating


@dataclass
class UserAEConfig:
    embedding_dim: int = 64
    hidden_dim: int = 256
    input_dropout: float = 0.3
    init_std: float = 0.01
    item_neighbours: int = 200  # weights kept per film in the item-item term (0: no term)
    liked_rating: float = LIKED_RATING  # ratings from here up are "liked" (loss targets)
    # The item-item term's input (chosen on the validation users by the training run):
    # "liked" (ratings >= liked_rating) or "all" ratings, each weighted 0.5 ** (age /
    # item_half_life) by its age in the user's rating order (recsys_core.data.recency);
    # item_half_life None: no decay.
    item_feedback: str = "liked"
    item_half_life: float | None = None

    def validate(self) -> None:
        """Raises ValueError naming the first setting out of range (a model's settings come
        from a manifest too: scoring must not score with a half-life of 0 or a NaN)."""
        if self.item_feedback not in ITEM_FEEDBACK:
            raise ValueError(f"item_feedback must be one of {ITEM_FEEDBACK}, got {self.item_feedback!r}")
        h = self.item_half_life
        if h is not None and (isinstance(h, bool) or not isinstance(h, (int, float)) or not 0 < h < math.inf):
            raise ValueError(f"item_half_life must be a finite number > 0 (or null: no decay), got {h!r}")
        if isinstance(self.liked_rating, bool) or not isinstance(self.liked_rating, (int, float)) \
                or not 0 < self.liked_rating <= 5:
            raise ValueError(f"liked_rating must be in (0, 5], got {self.liked_rating!r}")
        for name in ("embedding_dim", "hidden_dim"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not isinstance(self.item_neighbours, int) or self.item_neighbours < 0:
            raise ValueError(f"item_neighbours must be an integer >= 0, got {self.item_neighbours!r}")


@dataclass
class UserBatch:
    """A batch of users' films in EmbeddingBag form (flat indices + offsets + weights)."""

    indices: torch.Tensor  # (nnz,) int64 film_idx
    offsets: torch.Tensor  # (B,) int64 start of each user in ``indices``
    weights: torch.Tensor  # (nnz,) float32 input weight of each entry
    rows: torch.Tensor  # (nnz,) int64 row of each entry within the batch (0..B-1)
    # (nnz,) float32 loss weight of each entry as a reconstruction target; None: every entry 1
    targets: torch.Tensor | None = None
    ratings: torch.Tensor | None = None  # (nnz,) float32 stars of each entry; None: unknown
    ages: torch.Tensor | None = None  # (nnz,) int64 age in its user's rating order (recency)
    last_times: torch.Tensor | None = None  # (B,) int64 seconds of each user's latest rating (0: none)

    @property
    def size(self) -> int:
        return self.offsets.shape[0]

    def to(self, device: torch.device | str) -> UserBatch:
        moved = [None if t is None else t.to(device) for t in (self.targets, self.ratings, self.ages, self.last_times)]
        return UserBatch(*(t.to(device) for t in (self.indices, self.offsets, self.weights, self.rows)), *moved)

    def target_weights(self) -> torch.Tensor:
        return self.targets if self.targets is not None else torch.ones_like(self.weights)


def user_batch(
    csr: RatingsCSR,
    rows: np.ndarray,
    dropout: float = 0.0,
    generator: torch.Generator | None = None,
    low_target_weight: float | None = None,
    liked_rating: float = LIKED_RATING,
    ages: bool = True,
) -> UserBatch:
    """EmbeddingBag inputs of the users ``rows`` ((B,) int64 rows of ``csr``).

    Input weights are L2-normalized binary (1 / sqrt(films of the user)), with input
    dropout: dropped entries keep weight 0 (they stay in the batch as loss targets); kept
    ones are scaled by 1 / (1 - dropout) as in inverted dropout. ``low_target_weight``
    gives the entries below ``liked_rating`` that loss weight (liked ones weigh 1); None
    leaves every entry a target of weight 1. Each entry's stars and age in its user's rating
    order ride along (``item_inputs``: the item-item term's input; ``ages`` False leaves the
    ages out, for training batches, which the term never sees: a sort per batch saved).
    """
    positions, counts = gather_entries(csr.indptr, rows)
    norm = 1.0 / np.sqrt(np.maximum(counts, 1)).astype(np.float32)
    weights = torch.from_numpy(np.repeat(norm, counts))
    if dropout > 0.0:
        keep = torch.rand(len(positions), generator=generator) >= dropout
        weights = weights * keep / (1.0 - dropout)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    ratings = csr.ratings[positions]
    target_weights = None
    if low_target_weight is not None:
        target_weights = torch.from_numpy(np.where(ratings >= liked_rating, 1.0, low_target_weight).astype(np.float32))
    batch_rows = np.repeat(np.arange(len(rows), dtype=np.int64), counts)
    films = csr.indices[positions]
    last_times = np.zeros(len(rows), dtype=np.int64)
    np.maximum.at(last_times, batch_rows, csr.timestamps[positions])
    return UserBatch(
        indices=torch.from_numpy(films),
        offsets=torch.from_numpy(offsets),
        weights=weights,
        rows=torch.from_numpy(batch_rows),
        targets=target_weights,
        ratings=torch.from_numpy(np.ascontiguousarray(ratings, dtype=np.float32)),
        ages=torch.from_numpy(entry_ages(batch_rows, films, csr.timestamps[positions])) if ages else None,
        last_times=torch.from_numpy(last_times),
    )



def item_inputs(batch: UserBatch, feedback: str, half_life: float | None, liked_rating: float) -> torch.Tensor | None:
    """(nnz,) float32 weight of each entry of ``batch`` as the item-item term's input, or None
    when the batch carries no stars.

    ``feedback`` "liked": 1 for ratings >= ``liked_rating``, 0 below; "all": 1 for every
    rating. Times ``0.5 ** (age / half_life)`` (``recsys_core.data.recency``) unless
    ``half_life`` is None. Raises ValueError for another ``feedback``.
    """
    if feedback not in ITEM_FEEDBACK:
        raise ValueError(f"item feedback must be one of {ITEM_FEEDBACK}, got {feedback!r}")
    if batch.ratings is None:
        return None
    inputs = (batch.ratings >= liked_rating).float() if feedback == "liked" else torch.ones_like(batch.ratings)
    if half_life is not None and batch.ages is not None:
        inputs = inputs * torch.exp2(-batch.ages.float() / half_life)
    return inputs


class UserAE(nn.Module):
    def __init__(self, n_films: int, film_content: torch.Tensor | None, config: UserAEConfig | None = None):
        super().__init__()
        self.config = config or UserAEConfig()
        c = self.config
        self.n_films = n_films
        self.encoder_bag = nn.EmbeddingBag(n_films, c.hidden_dim, mode="sum")
        self.encoder_bias = nn.Parameter(torch.zeros(c.hidden_dim))
        self.to_embedding = nn.Linear(c.hidden_dim, c.embedding_dim)
        self.free = nn.Parameter(torch.randn(n_films, c.embedding_dim) * c.init_std)
        self.film_bias = nn.Parameter(torch.zeros(n_films))
        content = film_content if film_content is not None else torch.zeros(n_films, 0)
        if content.shape[0] != n_films:
            raise ValueError(f"film_content has {content.shape[0]} rows for {n_films} films")
        self.register_buffer("film_content", content.detach().float().clone())
        # no content (a data set without any film features): free vectors only
        self.content_proj = nn.Linear(content.shape[1], c.embedding_dim, bias=False) if content.shape[1] else None
        nn.init.normal_(self.encoder_bag.weight, std=c.init_std)
        self.item_item = ItemItemTerm(n_films, c.item_neighbours)
        self.recent = RecentPopularity()

    def encode(self, batch: UserBatch) -> torch.Tensor:
        hidden = self.encoder_bag(batch.indices, batch.offsets, per_sample_weights=batch.weights)
        return self.to_embedding(torch.tanh(hidden + self.encoder_bias))

    def film_vectors(self, films: torch.Tensor | None = None) -> torch.Tensor:
        """(n, embedding_dim): output weights in the shared space of ``films`` (default all)."""
        if films is None:
            if self.content_proj is None:
                return self.free
            return self.free + self.content_proj(self.film_content)
        if self.content_proj is None:
            return self.free[films]
        return self.free[films] + self.content_proj(self.film_content[films])

    def scores(self, user_embedding: torch.Tensor) -> torch.Tensor:
        return user_embedding @ self.film_vectors().T + self.film_bias

    def ae_logits(self, batch: UserBatch) -> torch.Tensor:
        """(B, n_films) the autoencoder's logits alone: what training fits."""
        return self.scores(self.encode(batch))

    def add_item_scores(self, scores: torch.Tensor, batch: UserBatch) -> torch.Tensor:
        """``scores`` (B, n_films) plus the blended item-item term and the recent-popularity
        term (``recsys_core.models.recent_popularity``), as float32 (in place when ``scores``
        is already float32); unchanged when both are off."""
        inputs = self.item_inputs(batch) if self.item_item.active else None
        recent = self.recent.active and batch.last_times is not None
        if inputs is None and not recent:
            return scores
        scores = scores.float().contiguous()
        if inputs is not None:
            self.item_item.add_to(scores, batch.rows, batch.indices, inputs)
        if recent:
            self.recent.add_to(scores, batch.last_times)
        return scores

    def item_inputs(self, batch: UserBatch) -> torch.Tensor | None:
        """(nnz,) the item-item term's input weights of ``batch`` with this model's settings."""
        c = self.config
        return item_inputs(batch, c.item_feedback, c.item_half_life, c.liked_rating)

    def forward(self, batch: UserBatch) -> torch.Tensor:
        """(B, n_films) recommendation scores: AE logits plus the item-item term."""
        return self.add_item_scores(self.ae_logits(batch), batch)

    @staticmethod
    def multinomial_nll(logits: torch.Tensor, batch: UserBatch) -> torch.Tensor:
        """Mean over users of ``-sum_j target_j * log_softmax(logits)_j``.

        The targets are the batch's entries (weight ``batch.targets`` or 1), gathered from
        the flat logits, so no dense (B, n_films) target matrix is needed:
        ``sum_j t_j log_softmax_j = sum_j t_j logits_j - (sum_j t_j) * logsumexp(logits)``.
        """
        logits = logits.float()
        n_films = logits.shape[1]
        t = batch.target_weights()
        picked = logits.reshape(-1)[batch.rows * n_films + batch.indices]
        per_row_t = torch.zeros(logits.shape[0], device=logits.device).index_add_(0, batch.rows, t)
        ll = (picked * t).sum() - (per_row_t * torch.logsumexp(logits, dim=1)).sum()
        return -ll / logits.shape[0]

    def sampled_multinomial_nll(self, batch: UserBatch, negatives: torch.Tensor) -> torch.Tensor:
        """``multinomial_nll`` with the softmax normalizer estimated on a candidate set.

        The exact loss needs every user's logit for every film (users x films per epoch),
        which dominates a CPU epoch at full scale. Here the logits are computed only for
        the batch's films ``P`` (every target, and the exact negatives they give the other
        users in the batch) and for ``negatives``: ``m`` films drawn uniformly with
        replacement from the whole vocabulary. For each user,
        ``Z = sum_{j in P} e^l_j + sum_{j not in P} e^l_j`` and the second sum is estimated
        without bias by ``n_films / m * sum_{s in negatives, s not in P} e^l_s``; the loss
        uses ``log`` of that estimate. Scoring and validation always use the exact softmax.
        """
        films, position = torch.unique(batch.indices, return_inverse=True)
        in_batch = torch.zeros(self.n_films, dtype=torch.bool, device=films.device)
        in_batch[films] = True
        user = self.encode(batch)
        batch_logits = (user @ self.film_vectors(films).T + self.film_bias[films]).float()
        sampled_logits = (user @ self.film_vectors(negatives).T + self.film_bias[negatives]).float()
        log_w = torch.where(in_batch[negatives], -torch.inf, math.log(self.n_films / max(len(negatives), 1)))
        log_z = torch.logaddexp(
            torch.logsumexp(batch_logits, dim=1), torch.logsumexp(sampled_logits + log_w, dim=1)
        )
        picked = batch_logits[batch.rows, position]
        t = batch.target_weights()
        per_row_t = torch.zeros(batch.size, device=picked.device).index_add_(0, batch.rows, t)
        return -((picked * t).sum() - (per_row_t * log_z).sum()) / batch.size


def encode_users(model: UserAE, csr: RatingsCSR, device: torch.device, batch_size: int = 4096) -> np.ndarray:
    """(n_users, embedding_dim) float32 embeddings of every user of ``csr`` from their full input."""
    model.eval()
    out = np.zeros((csr.n_users, model.config.embedding_dim), dtype=np.float32)
    with torch.no_grad():
        for lo in range(0, csr.n_users, batch_size):
            rows = np.arange(lo, min(lo + batch_size, csr.n_users))
            batch = user_batch(csr, rows, liked_rating=model.config.liked_rating).to(device)
            out[rows] = model.encode(batch).float().cpu().numpy()
    return out
