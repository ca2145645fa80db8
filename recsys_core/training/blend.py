"""Stage 4 of a training run: give the user AE its item-item term and choose the blend."""

from __future__ import annotations

import logging
import math

import torch

from recsys_core.data.csr import RatingsCSR
from recsys_core.models.user_ae import UserAE
from recsys_core.training.config import TrainConfig
from recsys_core.training.item_item import ItemItemFit
from recsys_core.training.validation import Validation, model_metrics

log = logging.getLogger(__name__)


def choose_blend(model: UserAE, fit: ItemItemFit, ae_metrics: dict, train: RatingsCSR, validation: Validation,
                 config: TrainConfig, device: torch.device, bf16: bool) -> tuple[dict, dict]:  # fmt: skip
    """Give ``model`` the item-item term ``fit`` (on ``train``) and pick its blend on ``validation``.

    Returns (a summary for the manifest, the validation metrics of the chosen blend). Each
    blend of ``config.item.blends`` is scored on the validation users (blend 0 is the AE
    alone, already scored: ``ae_metrics``); the best NDCG@10 wins (ties: the smaller
    blend), so the AE alone is kept when the term does not help.
    """
    model.item_item.set(fit.index.to(device), fit.weight.to(device))
    grid: list[dict] = []
    best_blend, best_metrics = 0.0, None
    for blend in sorted(config.item.blends):
        model.item_item.set_blend(blend)
        metrics = ae_metrics if blend == 0 else model_metrics(model, train, validation, config.top_n,
                                                             config.eval_batch_size, device, bf16)  # fmt: skip
        grid.append({"blend": blend, **metrics})
        if best_metrics is None or metrics.get("ndcg@10", math.nan) > best_metrics.get("ndcg@10", math.nan):
            best_blend, best_metrics = blend, metrics
    assert best_metrics is not None  # blends is non-empty (TrainConfig.validate)
    model.item_item.set_blend(best_blend)
    log.info("item-item blend %.1f: validation ndcg@10 %.4f (AE alone %.4f)", best_blend,
             best_metrics.get("ndcg@10", math.nan), ae_metrics.get("ndcg@10", math.nan))  # fmt: skip
    summary = {"films": fit.films, "neighbours": config.user.item_neighbours, "l2": config.item.l2,
               "blend": best_blend, "seconds": round(fit.seconds, 3), "grid": grid}  # fmt: skip
    return summary, best_metrics
