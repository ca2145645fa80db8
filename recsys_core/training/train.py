"""One training run, top to bottom: ``run_training`` reads ``features/ds=…`` and writes
``models/ds=…`` and ``embeddings/ds=…``.

The stages, in order (each a function of its own module):

1. film AE (``training.film``): film embeddings from genome, genres and numeric features;
2. item-item fit (``training.item_search``): pruned EASE / EDLAE, its input (liked or all
   ratings) and penalty chosen on the validation users; first, so that the time cap
   (``TrainConfig.max_minutes``) covers it;
3. user-AE epochs with early stopping on validation NDCG@10 (``training.user_loop``);
4. blend (``training.blend``): the item-item term's weight and the recency half-life of
   its input, chosen on the validation users;
5. refit (``training.user_loop``): on small data, a fresh model on every rating for the
   best number of epochs, when it fits in the time cap;
6. save: weights + manifest (``training.artifacts``), user and film embeddings.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass

import torch

from recsys_core.data.csr import RatingsCSR
from recsys_core.data.features import Features, load_features
from recsys_core.device import select_device
from recsys_core.errors import InputError
from recsys_core.model_version import DIGESTS, USER_WEIGHTS, version_string
from recsys_core.models.film_ae import FilmAE
from recsys_core.models.recent_popularity import LikeCounts
from recsys_core.models.user_ae import UserAE, encode_users
from recsys_core.paths import Warehouse
from recsys_core.training import artifacts
from recsys_core.training.blend import choose_blend
from recsys_core.training.config import TrainConfig
from recsys_core.training.film import train_film_ae
from recsys_core.training.item_item import ItemItemFit, ItemItemPoint, fit_item_item
from recsys_core.training.item_search import search_item_item
from recsys_core.training.user_loop import UserTraining, refit_user_ae, should_refit, train_user_ae
from recsys_core.training.validation import Validation, popularity_metrics, split_validation

log = logging.getLogger(__name__)


@dataclass
class TrainRun:
    film_model: FilmAE
    user_model: UserAE  # the published model: validated (or refitted), item-item term blended
    manifest: dict


def run_training(warehouse: Warehouse, ds: str, config: TrainConfig | None = None) -> TrainRun:
    """Train both models on ``features/ds=…`` and publish ``models/`` and ``embeddings/``.

    Raises ConfigError for a setting out of range, InputError when the features are
    missing or malformed.
    """
    config = copy.deepcopy(config or TrainConfig())  # the chosen term settings are written into it
    config.validate()
    started = time.monotonic()
    device, bf16 = select_device(config.device)
    features = load_features(warehouse.features(ds))
    csr = features.users.csr
    log.info("features ds=%s: %d users, %d films, %d ratings; device %s%s", ds, csr.n_users,
             csr.n_films, len(csr.indices), device, " (bf16)" if bf16 else "")  # fmt: skip
    train, validation = split_validation(csr, config.val_users, config.seed, config.holdout_fraction,
                                         config.min_val_ratings, config.user.liked_rating)  # fmt: skip
    if not len(validation.users):
        raise InputError(f"{warehouse.features(ds)}: no user can validate the model: none of the {csr.n_users} users "
                         f"has >= {config.min_val_ratings} ratings with one >= {config.user.liked_rating} stars "
                         f"(liked) among their latest; the features hold no liked ratings to learn from or check")  # fmt: skip
    log.info("validation: %d users, %d hidden ratings", len(validation.users), validation.n_hidden)

    film_model, film_content, film_loss = train_film_ae(features.films, config, device, bf16)
    capped_from = time.monotonic()
    deadline = capped_from + config.max_minutes * 60
    search = search_item_item(train, validation, config, device)
    user = train_user_ae(train, validation, film_content, config, device, bf16, deadline)
    item_item, metrics, item_fit = choose_blend(user.model, search.fits, user.best.metrics, train, validation,
                                                config, device, bf16)  # fmt: skip
    item_item["search"] = search.summary()
    model, refit = refit_on_every_rating(user, item_fit.point, validation, csr, film_content, config, device,
                                         bf16, deadline)  # fmt: skip
    user_seconds = time.monotonic() - capped_from

    popularity = popularity_metrics(train, validation, config.top_n, device)
    log.info("best epoch %d: model %s; popularity %s", user.best.epoch, _fmt(metrics), _fmt(popularity))
    manifest = {
        "ds": ds,
        "config": asdict(config),
        "seed": config.seed,
        "device": str(device),
        "bf16": bf16,
        "torch": torch.__version__,
        "vocabulary": dict(features.manifest["hashes"]),
        "dims": artifacts.model_dims(film_model, model),
        "counts": {"users": csr.n_users, "films": csr.n_films, "ratings": len(csr.indices),
                   "validation_users": len(validation.users), "validation_hidden": validation.n_hidden},
        "film_ae": {"epochs": config.film_epochs, "final_loss": film_loss},
        "batch_size": user.batch_size,
        "sampled_softmax": user.sampled_softmax,
        "epochs_run": len(user.history),
        "best_epoch": user.best.epoch,
        "stopped_by": user.stopped_by,
        "refit": refit,
        "item_item": item_item,
        "user_ae_seconds": round(user_seconds, 3),
        "metrics": {"model": metrics, "autoencoder": user.best.metrics, "popularity": popularity},
        "history": user.history,
    }  # fmt: skip
    save(warehouse, ds, features, film_model, model, manifest, device, started)
    return TrainRun(film_model, model, manifest)


def fit_item_item_term(csr: RatingsCSR, point: ItemItemPoint, config: TrainConfig, device: torch.device) -> ItemItemFit:
    """The item-item term's weights on ``csr`` at the chosen ``point`` (input, lambda, dropout)."""
    return fit_item_item(csr, config.user.item_neighbours, config.item, config.user.liked_rating, device, point)


def refit_on_every_rating(user: UserTraining, point: ItemItemPoint, validation: Validation, full: RatingsCSR,
                          film_content: torch.Tensor | None, config: TrainConfig, device: torch.device,
                          bf16: bool, deadline: float) -> tuple[UserAE, dict | None]:  # fmt: skip
    """(the model to publish, the refit summary or None when no refit ran).

    When validation hid at least ``config.refit_min_hidden_share`` of ``full`` and the best
    number of epochs fits before ``deadline``, a fresh model is trained on every rating and
    gets its own item-item term at the chosen ``point``, blend and half-life. A refit the cap cuts short is
    dropped (the validated model is kept; the summary says ``complete: false``).
    """
    if not should_refit(validation, full, config):
        return user.model, None
    epochs = user.best.epoch
    if time.monotonic() + epochs * user.epoch_seconds > deadline:
        log.info("no refit: %d epochs (~%.0fs) do not fit in the time cap", epochs, epochs * user.epoch_seconds)
        return user.model, None
    model, refit = refit_user_ae(full, film_content, config, device, bf16, epochs, deadline)
    if not refit["complete"]:
        log.info("refit cut by the time cap: keeping the validated model")
        return user.model, refit
    fit = fit_item_item_term(full, point, config, device)
    model.item_item.set(fit.index.to(device), fit.weight.to(device), float(user.model.item_item.blend))
    model.config.item_feedback = user.model.config.item_feedback
    model.config.item_half_life = user.model.config.item_half_life
    recent = user.model.recent
    if recent.active:  # the same window and weight, counted on every rating
        model.recent.set(LikeCounts(full, config.user.liked_rating), int(recent.window), float(recent.weight))
    refit["item_item_seconds"] = round(fit.seconds, 3)
    model.eval()
    return model, refit


def save(warehouse: Warehouse, ds: str, features: Features, film_model: FilmAE, model: UserAE, manifest: dict,
         device: torch.device, started: float) -> None:  # fmt: skip
    """Write ``models/ds=…`` (weights + manifest) and ``embeddings/ds=…`` (users, films)."""
    with torch.no_grad():
        film_vectors = model.film_vectors().float().cpu().numpy()
        film_bias = model.film_bias.float().cpu().numpy()
    users_embeddings = encode_users(model, features.users.csr, device)
    manifest["wall_seconds"] = round(time.monotonic() - started, 3)
    artifacts.save_models(warehouse.models(ds), film_model, model, manifest)
    version = version_string(ds, manifest[DIGESTS][USER_WEIGHTS])
    artifacts.write_embeddings(
        warehouse.embeddings(ds), features.users.user_ids, users_embeddings,
        features.films.movie_ids, film_vectors, film_bias, version,
    )  # fmt: skip


def _fmt(metrics: dict) -> str:
    return " ".join(f"{name} {value:.4f}" for name, value in metrics.items())
