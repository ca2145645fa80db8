"""The training loop: film AE, then the user AE with early stopping on validation NDCG@10.

Seeded and deterministic on CPU (for a fixed thread count): parameters are initialized
from ``torch.manual_seed(seed)``, the epoch shuffles and input-dropout masks come from
one CPU ``torch.Generator``, and MKL's math kernels are warmed up first
(``recsys_core.reproducible``). On CUDA the loop runs under bf16 autocast, with the loss in
float32.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from recsys_core.errors import ConfigError
from recsys_core.models.film_ae import FilmAE, FilmAEConfig, FilmBatch
from recsys_core.models.user_ae import LIKED_RATING, UserAE, UserAEConfig, UserBatch
from recsys_core.reproducible import warm_up_cpu_math
from recsys_core.training.data import FilmFeatures, RatingsCSR, Validation, gather_entries
from recsys_core.training.item_item import ItemItemConfig, ItemItemFit, fit_item_item
from recsys_core.training.metrics import standard_metrics

log = logging.getLogger(__name__)
PROGRESS_SECONDS = 30.0  # a progress line inside a user-AE epoch at most this often


@dataclass
class TrainConfig:
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda
    max_epochs: int = 50
    max_minutes: float = 25.0  # wall-time cap of the item-item fit + user-AE loop (checked before every batch)
    patience: int = 20  # epochs without a better validation NDCG@10 before stopping
    batch_size: int | None = None  # None: auto_batch_size(number of training users)
    lr: float = 3e-3
    weight_decay: float = 0.0
    film_epochs: int = 20
    film_batch_size: int = 512
    film_lr: float = 1e-3
    val_users: int = 5000
    holdout_fraction: float = 0.2
    min_val_ratings: int = 5
    relevant_rating: float = 4.0
    # Reconstruction targets: ratings >= target_min_rating weigh 1 in the loss, lower ones
    # low_target_weight (every rating is still an input). 0: reconstruct every rating.
    target_min_rating: float = 4.0
    low_target_weight: float = 0.0
    # After early stopping, train a fresh model on every rating (validation users' hidden
    # ones included) for the best number of epochs, when validation hid at least this
    # share of the ratings (small data: all users validate; full release: ~0.4%, no refit).
    refit_min_hidden_share: float = 0.02
    eval_batch_size: int = 1024
    top_k: int = 100
    # "auto": the sampled softmax on CPU when the vocabulary exceeds sampled_min_films
    # films (full release: ~5x faster epochs), the exact softmax otherwise; "on" / "off".
    sampled_softmax: str = "auto"
    sampled_min_films: int = 20_000
    negatives: int = 4096  # uniformly drawn films per batch for the sampled softmax
    film: FilmAEConfig = field(default_factory=FilmAEConfig)
    user: UserAEConfig = field(default_factory=UserAEConfig)
    item: ItemItemConfig = field(default_factory=ItemItemConfig)

    def validate(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.sampled_softmax not in ("auto", "on", "off"):
            raise ConfigError(f"sampled_softmax must be auto, on or off, got {self.sampled_softmax!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        for name in ("max_epochs", "val_users", "eval_batch_size", "top_k", "negatives"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_minutes <= 0:
            raise ConfigError(f"max_minutes must be > 0, got {self.max_minutes}")
        if self.low_target_weight < 0:
            raise ConfigError(f"low_target_weight must be >= 0, got {self.low_target_weight}")
        if self.user.item_neighbours < 0:
            raise ConfigError(f"user.item_neighbours must be >= 0, got {self.user.item_neighbours}")
        if self.item.l2 <= 0 or self.item.max_films < 0 or not self.item.blends:
            raise ConfigError(f"item: l2 must be > 0, max_films >= 0 and blends non-empty, got {self.item}")
        if not 0.0 <= self.user.input_dropout < 1.0:
            raise ConfigError(f"user.input_dropout must be in [0, 1), got {self.user.input_dropout}")


def select_device(requested: str = "auto") -> tuple[torch.device, bool]:
    """(device, use bf16 autocast): CUDA when present (or asked), else CPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device")
    if requested not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {requested!r}")
    device = torch.device(requested)
    return device, device.type == "cuda" and torch.cuda.is_bf16_supported()


def auto_batch_size(n_users: int) -> int:
    """About 5 steps per epoch, between 32 and 1024 users per batch.

    On ml-latest-small (610 users, lr 3e-3) larger batches generalized better: test
    NDCG@10 0.101 / 0.115 at 64 / 128 users per batch. At full scale 1,024 users per batch
    keep the per-step overhead (optimizer over the dense encoder/decoder tables) small.
    """
    return int(min(1024, max(32, n_users // 5)))


def use_sampled_softmax(config: TrainConfig, n_films: int, device: torch.device) -> bool:
    if config.sampled_softmax == "auto":
        return device.type == "cpu" and n_films > config.sampled_min_films
    return config.sampled_softmax == "on"


def adamw(params, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with the fused kernel (CPU and CUDA): about 8x faster steps over 17M weights."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


# ---------------------------------------------------------------- film autoencoder


def film_batch(films: FilmFeatures) -> FilmBatch:
    return FilmBatch(
        torch.from_numpy(films.genome),
        torch.from_numpy(films.has_genome.astype(np.float32)),
        torch.from_numpy(films.genres),
        torch.from_numpy(films.numeric),
    )


def train_film_ae(
    films: FilmFeatures, config: TrainConfig, device: torch.device, bf16: bool = False
) -> tuple[FilmAE, torch.Tensor, float]:
    """Train the film AE; returns (model, standardized film embeddings on CPU, last loss)."""
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
        emb = model.encode(data).float().cpu()
    log.info("film AE: %d films, %d epochs, final loss %.4f", n, config.film_epochs, last)
    return model, standardize_columns(emb), last


def standardize_columns(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per column, so the user AE's projection starts well scaled."""
    if x.shape[0] < 2:
        return x - x.mean(dim=0, keepdim=True)
    return (x - x.mean(dim=0, keepdim=True)) / x.std(dim=0, keepdim=True).clamp(min=1e-6)


# ---------------------------------------------------------------- user autoencoder


def user_batch(
    csr: RatingsCSR,
    rows: np.ndarray,
    dropout: float = 0.0,
    generator: torch.Generator | None = None,
    targets: tuple[float, float] | None = None,
    liked_rating: float = LIKED_RATING,
) -> UserBatch:
    """EmbeddingBag inputs for ``rows``: L2-normalized binary weights, with input dropout.

    Dropped entries keep weight 0 (they stay in the batch as loss targets); kept ones are
    scaled by 1 / (1 - dropout) as in inverted dropout. ``targets`` = (min_rating,
    low_weight) gives each entry its loss weight: 1 from ``min_rating`` up, else
    ``low_weight``; None leaves every entry a target of weight 1. Entries rated from
    ``liked_rating`` up are marked liked (the item-item term's input).
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
    if targets is not None:
        min_rating, low_weight = targets
        target_weights = torch.from_numpy(np.where(ratings >= min_rating, 1.0, low_weight).astype(np.float32))
    return UserBatch(
        indices=torch.from_numpy(csr.indices[positions]),
        offsets=torch.from_numpy(offsets),
        weights=weights,
        rows=torch.from_numpy(np.repeat(np.arange(len(rows), dtype=np.int64), counts)),
        targets=target_weights,
        liked=torch.from_numpy((ratings >= liked_rating).astype(np.float32)),
    )


def top_k_unseen(
    score_fn: Callable[[UserBatch], torch.Tensor],
    csr: RatingsCSR,
    users: np.ndarray,
    k: int,
    batch_size: int,
    device: torch.device,
    liked_rating: float = LIKED_RATING,
) -> np.ndarray:
    """(len(users), min(k, n_films)) best films per user by ``score_fn``, rated films excluded."""
    k = min(k, csr.n_films)
    out = np.zeros((len(users), k), dtype=np.int64)
    for lo in range(0, len(users), batch_size):
        batch = user_batch(csr, users[lo : lo + batch_size], liked_rating=liked_rating).to(device)
        scores = score_fn(batch).float()
        scores[batch.rows, batch.indices] = -torch.inf
        out[lo : lo + batch.size] = torch.topk(scores, k, dim=1).indices.cpu().numpy()
    return out


def popularity_metrics(train: RatingsCSR, validation: Validation, top_k: int, device: torch.device) -> dict:
    """The baseline: films by number of ratings in the training part, rated films excluded."""
    counts = torch.from_numpy(np.bincount(train.indices, minlength=train.n_films).astype(np.float32)).to(device)

    def score(batch: UserBatch) -> torch.Tensor:
        return counts.expand(batch.size, -1).clone()

    top = top_k_unseen(score, train, validation.users, top_k, 4096, device)
    return standard_metrics(top, validation.relevant)


def evaluate(model: UserAE, train: RatingsCSR, validation: Validation, config: TrainConfig,
             device: torch.device, bf16: bool) -> dict:
    model.eval()

    def score(batch: UserBatch) -> torch.Tensor:
        with autocast(device, bf16):
            return model(batch)

    with torch.no_grad():
        top = top_k_unseen(score, train, validation.users, config.top_k, config.eval_batch_size, device,
                           config.user.liked_rating)  # fmt: skip
    return standard_metrics(top, validation.relevant)


@dataclass
class UserTraining:
    model: UserAE
    history: list[dict]
    best_epoch: int
    metrics: dict
    seconds: float
    batch_size: int
    sampled_softmax: bool
    refit: dict | None = None  # {"epochs", "complete", ...} when a refit on every rating ran
    item_item: dict | None = None  # the item-item term: films, blend, validation per blend
    autoencoder_metrics: dict | None = None  # validation metrics of the AE alone


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

    def targets(self) -> tuple[float, float] | None:
        c = self.config
        return (c.target_min_rating, c.low_target_weight) if c.target_min_rating > 0 else None


def train_epoch(model: UserAE, loop: EpochLoop, epoch: int) -> tuple[float, int]:
    """One pass over the users with ratings, in a seeded order; returns (mean loss, users seen).

    Stops early (after at least one batch) once ``loop.deadline`` has passed.
    """
    config, device = loop.config, loop.device
    model.train()
    order = loop.rows[torch.randperm(len(loop.rows), generator=loop.generator).numpy()]
    t0 = time.monotonic()
    total, seen, last_log = 0.0, 0, t0
    for lo in range(0, len(order), loop.batch_size):
        if seen and time.monotonic() >= loop.deadline:
            log.info("time cap of %.1f min reached inside epoch %d after %d users", config.max_minutes, epoch, seen)
            break
        batch = user_batch(loop.csr, order[lo : lo + loop.batch_size], config.user.input_dropout, loop.generator,
                           loop.targets(), config.user.liked_rating).to(device)  # fmt: skip
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
        seen += batch.size
        if time.monotonic() - last_log >= PROGRESS_SECONDS:
            last_log = time.monotonic()
            rate = seen / (last_log - t0)
            log.info("epoch %d: %d/%d users, %.0f users/s, epoch eta %.0fs", epoch, seen, len(order), rate,
                     (len(order) - seen) / max(rate, 1e-9))  # fmt: skip
    return total / max(seen, 1), seen


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


def train_user_ae(
    train: RatingsCSR,
    validation: Validation,
    film_content: torch.Tensor | None,
    config: TrainConfig,
    device: torch.device,
    bf16: bool = False,
    full: RatingsCSR | None = None,
) -> UserTraining:
    """Mult-DAE training with early stopping on ``validation``.

    The returned model holds the best epoch's weights; or, when ``full`` (every rating,
    the validation users' hidden ones included) is given and validation hid at least
    ``config.refit_min_hidden_share`` of it, a fresh model trained on ``full`` for the best
    number of epochs (if that fits in the time left; a refit the cap cuts short is dropped).
    """
    warm_up_cpu_math()
    started = time.monotonic()
    deadline = started + config.max_minutes * 60
    # first, so the time cap covers it: minutes on CPU at full scale, the AE gets the rest
    item_fit = item_item_fit(train, config, device)
    model, loop = seeded_model_and_loop(train, film_content, config, device, bf16, deadline)
    log.info("user AE: %d training users, batch %d, %s softmax%s", len(loop.rows), loop.batch_size,
             "sampled" if loop.sampled else "exact", f" ({config.negatives} negatives)" if loop.sampled else "")  # fmt: skip
    history: list[dict] = []
    best: tuple[float, int, dict, dict] | None = None  # ndcg, epoch, state, metrics
    stale = 0
    for epoch in range(1, config.max_epochs + 1):
        t0 = time.monotonic()
        loss, seen = train_epoch(model, loop, epoch)
        train_seconds = time.monotonic() - t0
        metrics = evaluate(model, train, validation, config, device, bf16)
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
        if best is None or ndcg > best[0]:
            best = (ndcg, epoch, copy.deepcopy(model.state_dict()), metrics)
            stale = 0
        else:
            stale += 1
        if stale >= config.patience and epoch < config.max_epochs:
            log.info("early stop: no better ndcg@10 for %d epochs (best %.4f at epoch %d)", stale, best[0], best[1])
            break
        if time.monotonic() >= deadline:
            log.info("time cap of %.1f min reached after epoch %d", config.max_minutes, epoch)
            break
    assert best is not None
    model.load_state_dict(best[2])
    item_item, metrics = add_item_item(model, item_fit, best[3], train, validation, config, device, bf16)
    refit = None
    if full is not None and should_refit(validation, full, config):
        epoch_seconds = sum(h["seconds"] for h in history) / len(history)
        if time.monotonic() + best[1] * epoch_seconds <= deadline:
            refit_model, refit = refit_user_ae(full, film_content, config, device, bf16, best[1], deadline)
            if refit["complete"]:
                fit = item_item_fit(full, config, device)
                refit_model.item_item.set(fit.index.to(device), fit.weight.to(device), float(model.item_item.blend))
                refit["item_item_seconds"] = round(fit.seconds, 3)
                model = refit_model
            else:
                log.info("refit cut by the time cap: keeping the validated model")
        else:
            log.info("no refit: %d epochs (~%.0fs) do not fit in the time cap", best[1], best[1] * epoch_seconds)
    model.eval()
    return UserTraining(model, history, best[1], metrics, time.monotonic() - started, loop.batch_size,
                        loop.sampled, refit, item_item, best[3])  # fmt: skip


def item_item_fit(csr: RatingsCSR, config: TrainConfig, device: torch.device) -> ItemItemFit:
    return fit_item_item(csr, config.user.item_neighbours, config.item, config.user.liked_rating, device)


def add_item_item(model: UserAE, fit: ItemItemFit, ae_metrics: dict, train: RatingsCSR, validation: Validation,
                  config: TrainConfig, device: torch.device, bf16: bool) -> tuple[dict, dict]:  # fmt: skip
    """Give ``model`` the item-item term ``fit`` (on ``train``) and pick its blend on ``validation``.

    Returns (a summary for the manifest, the validation metrics of the chosen blend). Each
    blend of ``config.item.blends`` is scored on the validation users (blend 0 is the AE
    alone, already scored: ``ae_metrics``); the best NDCG@10 wins (ties: the smaller
    blend), so the AE alone is kept when the term does not help.
    """
    model.item_item.set(fit.index.to(device), fit.weight.to(device))
    grid, best = [], None
    for blend in sorted(config.item.blends):
        model.item_item.set_blend(blend)
        metrics = ae_metrics if blend == 0 else evaluate(model, train, validation, config, device, bf16)
        grid.append({"blend": blend, **metrics})
        if best is None or metrics.get("ndcg@10", math.nan) > best[1].get("ndcg@10", math.nan):
            best = (blend, metrics)
    assert best is not None
    model.item_item.set_blend(best[0])
    log.info("item-item blend %.1f: validation ndcg@10 %.4f (AE alone %.4f)", best[0],
             best[1].get("ndcg@10", math.nan), ae_metrics.get("ndcg@10", math.nan))  # fmt: skip
    summary = {"films": fit.films, "neighbours": config.user.item_neighbours, "l2": config.item.l2,
               "blend": best[0], "seconds": round(fit.seconds, 3), "grid": grid}  # fmt: skip
    return summary, best[1]


def should_refit(validation: Validation, full: RatingsCSR, config: TrainConfig) -> bool:
    return validation.n_hidden >= config.refit_min_hidden_share * max(len(full.indices), 1)


def refit_user_ae(full: RatingsCSR, film_content: torch.Tensor | None, config: TrainConfig, device: torch.device,
                  bf16: bool, epochs: int, deadline: float) -> tuple[UserAE, dict]:  # fmt: skip
    """A fresh model, seeded as the validated one, trained on every rating for ``epochs`` epochs.

    When validation hides a large share of the ratings (on small data every user
    validates), the validated model never saw the most recent fifth of each user's
    history, which is what predicts the next films best.
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


def user_embeddings(model: UserAE, csr: RatingsCSR, device: torch.device, batch_size: int = 4096) -> np.ndarray:
    """(n_users, embedding_dim) float32 embeddings of every user from their full input."""
    model.eval()
    out = np.zeros((csr.n_users, model.config.embedding_dim), dtype=np.float32)
    with torch.no_grad():
        for lo in range(0, csr.n_users, batch_size):
            rows = np.arange(lo, min(lo + batch_size, csr.n_users))
            out[rows] = model.encode(user_batch(csr, rows).to(device)).float().cpu().numpy()
    return out


# ---------------------------------------------------------------- the whole run


@dataclass
class TrainRun:
    film_model: FilmAE
    user: UserTraining
    manifest: dict


def run_training(warehouse, ds: str, config: TrainConfig | None = None) -> TrainRun:
    """Read ``features/ds=…``, train both models, publish ``models/`` and ``embeddings/``."""
    from dataclasses import asdict

    from recsys_core.training import artifacts
    from recsys_core.training.data import load_features, split_validation

    config = config or TrainConfig()
    config.validate()
    started = time.monotonic()
    device, bf16 = select_device(config.device)
    features = load_features(warehouse.features(ds))
    csr = features.users.csr
    log.info("features ds=%s: %d users, %d films, %d ratings; device %s%s", ds, csr.n_users,
             csr.n_films, len(csr.indices), device, " (bf16)" if bf16 else "")  # fmt: skip
    train, validation = split_validation(
        csr, config.val_users, config.seed, config.holdout_fraction, config.min_val_ratings, config.relevant_rating
    )
    log.info("validation: %d users, %d hidden ratings", len(validation.users), validation.n_hidden)
    film_model, film_content, film_loss = train_film_ae(features.films, config, device, bf16)
    user = train_user_ae(train, validation, film_content, config, device, bf16, full=csr)
    popularity = popularity_metrics(train, validation, config.top_k, device)
    log.info("best epoch %d: model %s; popularity %s", user.best_epoch, _fmt(user.metrics), _fmt(popularity))

    manifest = {
        "ds": ds,
        "config": asdict(config),
        "seed": config.seed,
        "device": str(device),
        "bf16": bf16,
        "torch": torch.__version__,
        "vocabulary": dict(features.manifest["hashes"]),
        "dims": artifacts.model_dims(film_model, user.model),
        "counts": {"users": csr.n_users, "films": csr.n_films, "ratings": len(csr.indices),
                   "validation_users": len(validation.users), "validation_hidden": validation.n_hidden},
        "film_ae": {"epochs": config.film_epochs, "final_loss": film_loss},
        "batch_size": user.batch_size,
        "sampled_softmax": user.sampled_softmax,
        "epochs_run": len(user.history),
        "best_epoch": user.best_epoch,
        "refit": user.refit,
        "item_item": user.item_item,
        "user_ae_seconds": round(user.seconds, 3),
        "metrics": {"model": user.metrics, "autoencoder": user.autoencoder_metrics, "popularity": popularity},
        "history": user.history,
    }  # fmt: skip
    with torch.no_grad():
        film_vectors = user.model.film_vectors().float().cpu().numpy()
        film_bias = user.model.film_bias.float().cpu().numpy()
    users_emb = user_embeddings(user.model, csr, device)
    manifest["wall_seconds"] = round(time.monotonic() - started, 3)
    artifacts.save_models(warehouse.models(ds), film_model, user.model, manifest)
    artifacts.write_embeddings(
        warehouse.embeddings(ds), features.users.user_ids, users_emb,
        features.films.movie_ids, film_vectors, film_bias,
    )  # fmt: skip
    return TrainRun(film_model, user, manifest)


def _fmt(metrics: dict) -> str:
    return " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
