"""The user AE's epochs: a seeded epoch loop, early stopping on validation NDCG@10, the refit.

Seeded and deterministic on CPU (for a fixed thread count): parameters are initialized
from ``torch.manual_seed(seed)``, the epoch shuffles and input-dropout masks come from one
CPU ``torch.Generator``, and MKL's math kernels are warmed up first
(``recsys_core.reproducible``). On CUDA the loop runs under bf16 autocast, with the loss
in float32.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from recsys_core.data.csr import RatingsCSR
from recsys_core.device import autocast
from recsys_core.models.user_ae import UserAE, user_batch
from recsys_core.progress import Progress
from recsys_core.reproducible import warm_up_cpu_math
from recsys_core.training.config import TrainConfig, auto_batch_size, patience_epochs
from recsys_core.training.optim import adamw
from recsys_core.training.validation import Validation, model_metrics

log = logging.getLogger(__name__)
PROGRESS_SECONDS = 30.0  # a progress line inside a user-AE epoch at most this often


def use_sampled_softmax(config: TrainConfig, n_films: int, device: torch.device) -> bool:
    """``config.sampled_softmax`` resolved: "auto" = on the CPU above ``sampled_min_films`` films."""
    if config.sampled_softmax == "auto":
        return device.type == "cpu" and n_films > config.sampled_min_films
    return config.sampled_softmax == "on"


@dataclass
class EpochLoop:
    """What one user-AE epoch needs besides the model: data, optimizer, randomness, the cap."""

    csr: RatingsCSR
    rows: np.ndarray  # the users with at least one rating: the ones an epoch trains on
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    config: TrainConfig
    device: torch.device
    bf16: bool
    batch_size: int
    sampled: bool
    deadline: float  # time.monotonic() after which no new batch starts


def train_epoch(model: UserAE, loop: EpochLoop, epoch: int) -> tuple[float, int]:
    """One pass over the users with ratings, in a seeded order; returns (mean loss, users seen).

    Stops early (after at least one batch) once ``loop.deadline`` has passed.
    """
    config, device = loop.config, loop.device
    model.train()
    order = loop.rows[torch.randperm(len(loop.rows), generator=loop.generator).numpy()]
    progress = Progress(f"epoch {epoch}", total=len(order), unit="users", every_s=PROGRESS_SECONDS, logger=log)
    total = 0.0
    for lo in range(0, len(order), loop.batch_size):
        if progress.count and time.monotonic() >= loop.deadline:
            log.info("time cap of %g min reached inside epoch %d after %d users", config.max_minutes, epoch,
                     progress.count)  # fmt: skip
            break
        batch = user_batch(loop.csr, order[lo : lo + loop.batch_size], config.user.input_dropout, loop.generator,
                           config.low_target_weight, config.user.liked_rating, ages=False).to(device)  # fmt: skip
        with autocast(device, loop.bf16):
            if loop.sampled:
                negatives = torch.randint(loop.csr.n_films, (config.negatives,), generator=loop.generator)
                loss = model.sampled_multinomial_nll(batch, negatives.to(device))
            else:
                loss = UserAE.multinomial_nll(model.ae_logits(batch), batch)
        loop.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        loop.optimizer.step()
        total += loss.item() * batch.size
        progress.add(batch.size)
    return total / max(progress.count, 1), progress.count


def seeded_model_and_loop(csr: RatingsCSR, film_content: torch.Tensor | None, config: TrainConfig,
                          device: torch.device, bf16: bool, deadline: float) -> tuple[UserAE, EpochLoop]:  # fmt: skip
    """A freshly initialized user AE and its epoch loop, both from ``config.seed``.

    The validated run and the refit start from the same weights and the same shuffles.
    """
    torch.manual_seed(config.seed)
    model = UserAE(csr.n_films, film_content, config.user).to(device)
    rows = np.flatnonzero(csr.counts > 0)
    loop = EpochLoop(
        csr=csr,
        rows=rows,
        optimizer=adamw(model.parameters(), config.lr, config.weight_decay),
        generator=torch.Generator().manual_seed(config.seed + 1),
        config=config,
        device=device,
        bf16=bf16,
        batch_size=config.batch_size or auto_batch_size(len(rows)),
        sampled=use_sampled_softmax(config, csr.n_films, device),
        deadline=deadline,
    )
    return model, loop


@dataclass
class BestEpoch:
    """The best validated epoch so far: its NDCG@10, number, weights and validation metrics."""

    ndcg: float
    epoch: int
    state: dict  # a deep copy of the model's state_dict at that epoch
    metrics: dict


@dataclass
class UserTraining:
    """The early-stopped user AE: the model holds the best epoch's weights."""

    model: UserAE
    best: BestEpoch
    history: list[dict]  # one row per epoch: loss, validation metrics, users/s, seconds
    epoch_seconds: float  # mean seconds of an epoch (training + validation)
    batch_size: int
    sampled_softmax: bool
    stopped_by: str = "epochs"  # what ended the epochs: "early stopping", "epochs" (max_epochs) or "time cap"


def train_user_ae(train: RatingsCSR, validation: Validation, film_content: torch.Tensor | None,
                  config: TrainConfig, device: torch.device, bf16: bool = False,
                  deadline: float | None = None) -> UserTraining:  # fmt: skip
    """Mult-DAE training with early stopping on the validation users' NDCG@10.

    Stops after ``patience_epochs`` (of ``config.patience_steps`` optimizer steps) without a
    better NDCG@10, after
    ``config.max_epochs``, or at ``deadline`` (a ``time.monotonic()`` reading; default
    ``config.max_minutes`` from now). Validation scores the AE's own logits (the item-item
    term is still off).
    """
    warm_up_cpu_math()
    started = time.monotonic()
    deadline = started + config.max_minutes * 60 if deadline is None else deadline
    model, loop = seeded_model_and_loop(train, film_content, config, device, bf16, deadline)
    log.info("user AE: %d training users, batch %d, %s softmax%s", len(loop.rows), loop.batch_size,
             "sampled" if loop.sampled else "exact", f" ({config.negatives} negatives)" if loop.sampled else "")  # fmt: skip
    history: list[dict] = []
    best: BestEpoch | None = None
    stale = 0
    stopped_by = "epochs"
    steps_per_epoch = len(loop.rows) / loop.batch_size
    patience = patience_epochs(config.patience_steps, steps_per_epoch, config.min_patience_epochs)
    log.info("early stopping after %d epochs without a better ndcg@10 (%.1f steps per epoch)", patience, steps_per_epoch)
    for epoch in range(1, config.max_epochs + 1):
        t0 = time.monotonic()
        loss, seen = train_epoch(model, loop, epoch)
        train_seconds = time.monotonic() - t0
        metrics = model_metrics(model, train, validation, config.top_n, config.eval_batch_size, device, bf16)
        elapsed = time.monotonic() - started
        left = min((config.max_epochs - epoch) * elapsed / epoch, max(deadline - time.monotonic(), 0.0))
        row = {"epoch": epoch, "loss": loss, **metrics,
               "users_per_s": seen / max(train_seconds, 1e-9), "seconds": time.monotonic() - t0}  # fmt: skip
        history.append(row)
        log.info(
            "epoch %d/%d loss %.4f ndcg@10 %.4f recall@20 %.4f %.0f users/s eta %.0fs",
            epoch, config.max_epochs, row["loss"], metrics.get("ndcg@10", math.nan),
            metrics.get("recall@20", math.nan), row["users_per_s"], left,
        )  # fmt: skip
        ndcg = metrics.get("ndcg@10", math.nan)
        if best is None or ndcg > best.ndcg:
            best = BestEpoch(ndcg, epoch, copy.deepcopy(model.state_dict()), metrics)
            stale = 0
        else:
            stale += 1
        if stale >= patience and epoch < config.max_epochs:
            log.info("early stop: no better ndcg@10 for %d epochs (best %.4f at epoch %d)", stale, best.ndcg,
                     best.epoch)  # fmt: skip
            stopped_by = "early stopping"
            break
        if time.monotonic() >= deadline:
            log.info("time cap of %g min reached after epoch %d", config.max_minutes, epoch)
            stopped_by = "time cap"
            break
    assert best is not None  # max_epochs >= 1 (TrainConfig.validate)
    model.load_state_dict(best.state)
    model.eval()
    epoch_seconds = sum(h["seconds"] for h in history) / len(history)
    return UserTraining(model, best, history, epoch_seconds, loop.batch_size, loop.sampled, stopped_by)


def should_refit(validation: Validation, full: RatingsCSR, config: TrainConfig) -> bool:
    """Refit when validation hid at least ``config.refit_min_hidden_share`` of every rating."""
    return validation.n_hidden >= config.refit_min_hidden_share * max(len(full.indices), 1)


def refit_user_ae(full: RatingsCSR, film_content: torch.Tensor | None, config: TrainConfig, device: torch.device,
                  bf16: bool, epochs: int, deadline: float) -> tuple[UserAE, dict]:  # fmt: skip
    """A fresh model, seeded as the validated one, trained on every rating for ``epochs`` epochs.

    When validation hides a large share of the ratings (on small data every user
    validates), the validated model never saw the most recent fifth of each user's
    history, which is what predicts the next films best. Returns (model, summary: epochs,
    complete = False when the ``deadline`` cut an epoch short, final_loss, seconds).
    """
    t0 = time.monotonic()
    model, loop = seeded_model_and_loop(full, film_content, config, device, bf16, deadline)
    losses, complete = [], True
    for epoch in range(1, epochs + 1):
        loss, seen = train_epoch(model, loop, epoch)
        losses.append(loss)
        if seen < len(loop.rows):  # the time cap cut this epoch
            complete = False
            break
    seconds = time.monotonic() - t0
    log.info("refit on every rating: %d epochs, final loss %.4f, %.1fs", len(losses), losses[-1], seconds)
    return model, {"epochs": len(losses), "complete": complete, "final_loss": losses[-1], "seconds": round(seconds, 3)}
