"""Benchmark the item-item term's closed-form fit (pruned EASE) on a features partition.

    .venv/bin/python bench/item_item.py --warehouse /tmp/recsys-bench/warehouse-1.0-42
    .venv/bin/python bench/item_item.py --warehouse DIR --max-films 10000

Loads ``features/ds=…`` (``bench/prep.py``), fits the term with the training defaults
(or the given ``--max-films`` / ``--neighbours``) and prints the films fitted, the Gram,
inversion and total seconds, and the peak RSS. The fit runs once per training job (twice
when the job refits on every rating), after the user AE.
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

from recsys_core.paths import Warehouse
from recsys_core.training.data import load_features
from recsys_core.training.item_item import (
    ItemItemConfig,
    ease_weights,
    gram,
    most_liked_films,
    strongest,
)
from recsys_core.training.train import TrainConfig

log = logging.getLogger("bench.item_item")


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

    t0 = time.monotonic()
    liked = csr.select_entries(csr.ratings >= defaults.user.liked_rating)
    films = most_liked_films(liked, config.max_films)
    g = gram(liked, films)
    t_gram = time.monotonic() - t0
    log.info("gram of %d films: %.1fs", len(films), t_gram)
    t0 = time.monotonic()
    b = ease_weights(g, config.l2)  # overwrites g
    del g
    t_inv = time.monotonic() - t0
    log.info("inverse: %.1fs", t_inv)
    t0 = time.monotonic()
    strongest(b, min(k, len(films) - 1))
    t_top = time.monotonic() - t0
    share = float(np.isin(liked.indices, films).mean())
    print(json.dumps({
        "users": csr.n_users, "films": csr.n_films, "liked_ratings": len(liked.indices),
        "fitted_films": len(films), "liked_share_of_fitted_films": round(share, 4), "neighbours": k,
        "load_s": round(t_load, 1), "gram_s": round(t_gram, 1), "inverse_s": round(t_inv, 1),
        "top_k_s": round(t_top, 1), "fit_s": round(t_gram + t_inv + t_top, 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "threads": torch.get_num_threads(),
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
