"""Benchmark the item-item term's closed-form fit (pruned EASE) on a features partition.

    .venv/bin/python bench/item_item.py --warehouse /tmp/recsys-bench/warehouse-1.0-42
    .venv/bin/python bench/item_item.py --warehouse DIR --max-films 10000

Loads ``features/ds=…`` (``bench/prep.py``), fits the term with the training defaults
(or the given ``--max-films`` / ``--neighbours``) and prints the films fitted, the Gram,
inversion and total seconds, and the peak RSS. The fit runs once per training job (twice
when the job refits on every rating), before the user AE, inside its time cap.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time
from dataclasses import replace

import numpy as np
import torch

from recsys_core.data.features import load_features
from recsys_core.paths import Warehouse
from recsys_core.training.config import TrainConfig
from recsys_core.training.item_item import ItemItemConfig, fit_item_item, most_liked_films


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", default="/tmp/recsys-bench/warehouse-1.0-42")
    parser.add_argument("--ds", default="2018-09-30")
    parser.add_argument("--max-films", type=int, default=None)
    parser.add_argument("--neighbours", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    defaults = TrainConfig()
    config: ItemItemConfig = defaults.item
    if args.max_films is not None:
        config = replace(config, max_films=args.max_films)
    k = args.neighbours if args.neighbours is not None else defaults.user.item_neighbours
    t0 = time.monotonic()
    csr = load_features(Warehouse(args.warehouse).features(args.ds)).users.csr
    t_load = time.monotonic() - t0
    liked_rating = defaults.user.liked_rating
    fit = fit_item_item(csr, k, config, liked_rating)  # logs the Gram and inversion stages
    liked = csr.select_entries(csr.ratings >= liked_rating)
    share = float(np.isin(liked.indices, most_liked_films(liked, config.max_films)).mean())
    print(json.dumps({
        "users": csr.n_users, "films": csr.n_films, "liked_ratings": len(liked.indices),
        "fitted_films": fit.films, "liked_share_of_fitted_films": round(share, 4), "neighbours": k,
        "load_s": round(t_load, 1), "gram_s": round(fit.gram_seconds, 1),
        "inverse_and_top_k_s": round(fit.seconds - fit.gram_seconds, 1), "fit_s": round(fit.seconds, 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "threads": torch.get_num_threads(),
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
