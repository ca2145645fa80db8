"""Scoring speed at the full shape on a random model: the fast (certified) and the exact path,
and the step as it was before them.

    .venv/bin/python bench/score_speed.py                        # 283,228 users, the three paths
    .venv/bin/python bench/score_speed.py --exact-users 283228   # the exact path on every user (slow)
    .venv/bin/python bench/score_speed.py --users 20000 --paths fast
    .venv/bin/python bench/score_speed.py --profile 10           # cProfile of 10 fast-path batches

No pipeline needed: a random user AE of the real shape (58,098 films, 64-d embeddings,
256 hidden, an item-item term with 200 neighbours per film and blend 40) and random
ratings (~98 per user, popularity-skewed films, about half of them liked, random
timestamps). Paths: ``fast`` (the default scorer), ``exact`` (``ScoreConfig.exact``) and
``before`` (the per-batch step before the fast path: torch's product, the term in place,
``top_n_unseen``; its scores differ in the last bits). Each runs in its own process, as
``run_scoring`` runs it: ``model_rows`` batch by batch through ``write_in_batches`` into a
zstd Parquet file (in a temporary directory). The exact path ranks every film by the reference score
and is slow, so by default it scores only the first ``--exact-users`` users; its users/s
gives the full-scale time. Prints seconds, CPU seconds (every thread of the process),
users/s, the users the fast path ranked exactly (uncertified), RSS after the set-up and peak
RSS while scoring (sampled every 0.1 s), and the load average. Target on the 2-core dev
machine: the fast path <= 90 s at full scale.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

import numpy as np
import psutil
import pyarrow as pa
import torch

from recsys_core import defaults
from recsys_core.data.csr import RatingsCSR, indptr_from_counts
from recsys_core.device import autocast, select_device
from recsys_core.models.user_ae import UserAE, UserAEConfig, user_batch
from recsys_core.ranking.top_n import top_n_unseen
from recsys_core.reproducible import warm_up_cpu_math
from recsys_core.scoring.score import BatchScorer, rows_table, rows_writer, write_in_batches

FULL_USERS, FULL_FILMS = 283_228, 58_098


def random_ratings(n_users: int, n_films: int, mean: float, seed: int) -> RatingsCSR:
    """Users x films ratings: lognormal counts per user (mean ``mean`` after duplicates are
    dropped), films drawn by a Zipf-like popularity, stars 0.5..5 with about half >= 4."""
    rng = np.random.default_rng(seed)
    counts = np.clip(rng.lognormal(np.log(mean) - 0.5, 1.0, n_users), 1, n_films // 2).astype(
        np.int64
    )
    counts = np.maximum(1, counts * (1.2 * mean / counts.mean())).astype(
        np.int64
    )  # +20%: duplicates go
    popularity = np.cumsum(rng.permutation(1.0 / np.arange(1, n_films + 1) ** 0.9))
    films = np.searchsorted(popularity, rng.random(int(counts.sum())) * popularity[-1]).clip(
        0, n_films - 1
    )
    rows = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    films = films + rows * n_films
    films.sort()  # by (row, film): rows ascending already
    films = np.unique(films)
    rows, films = films // n_films, films % n_films
    stars = rng.choice(
        np.arange(1, 11) / 2, len(films), p=[1, 3, 2, 6, 5, 14, 17, 25, 10, 17] / np.float64(100)
    )
    return RatingsCSR(indptr_from_counts(np.bincount(rows, minlength=n_users)), films, stars.astype(np.float32),
                      rng.integers(10**9, 1.5 * 10**9, len(films)), n_films)  # fmt: skip


def random_model(n_films: int, seed: int) -> UserAE:
    """A user AE of the real shape with random weights and an active item-item term."""
    generator = torch.Generator().manual_seed(seed)
    model = UserAE(
        n_films, torch.randn(n_films, 32, generator=generator), UserAEConfig(item_neighbours=200)
    )
    with torch.no_grad():
        model.encoder_bag.weight.normal_(0, 0.05, generator=generator)
        model.free.normal_(0, 0.3, generator=generator)
        model.film_bias.normal_(0, 1, generator=generator)
        index = torch.randint(0, n_films, (n_films, 200), generator=generator)
        model.item_item.set(index, torch.rand(n_films, 200, generator=generator) * 0.01, blend=40.0)
    return model.eval()


class PeakRss:
    """Samples this process's RSS every 0.1 s in a thread while in the ``with`` block."""

    def __enter__(self) -> Self:
        self.process, self.peak, self.done = psutil.Process(), 0, threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self.done.wait(0.1)

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


class BeforeScorer(BatchScorer):
    """The per-batch step as it was before the fast path (commit 1fc8419), for the timing only:
    torch's fp32 product over every film, the term added in place, ``top_n_unseen``."""

    def model_rows(self, csr: RatingsCSR, rows: np.ndarray, user_ids: np.ndarray) -> pa.Table:
        model, vectors_t = self.model, self.films.vectors.T
        with torch.no_grad():
            batch = user_batch(csr, rows, liked_rating=model.config.liked_rating).to(self.device)
            with autocast(self.device, self.bf16):
                scores = model.add_item_scores(
                    model.encode(batch) @ vectors_t + self.films.bias, batch
                )
            films, values, count = top_n_unseen(
                scores.float(), batch.rows, batch.indices, self.top_n
            )
        return rows_table(
            user_ids[rows], films, values, count, self.movie_ids, "model", self.version
        )


def score_once(args: argparse.Namespace) -> dict:
    """One path in this process: set up, score, return the figures."""
    warm_up_cpu_math()
    device, bf16 = select_device(args.device)
    csr = random_ratings(
        args.users, FULL_FILMS if args.films is None else args.films, args.mean, args.seed
    )
    model = random_model(csr.n_films, args.seed).to(device)
    n_users = min(args.users, args.exact_users) if args.path == "exact" else args.users
    rows, user_ids = np.arange(n_users, dtype=np.int64), np.arange(csr.n_users, dtype=np.int64) + 1
    kind = BeforeScorer if args.path == "before" else BatchScorer
    scorer = kind(model, np.arange(csr.n_films) + 1, csr.film_counts(), "bench", args.top_n, device, bf16,
                  exact=args.path == "exact")  # fmt: skip
    setup_rss = psutil.Process().memory_info().rss
    with tempfile.TemporaryDirectory() as tmp, PeakRss() as rss:
        started, cpu_started = time.perf_counter(), time.process_time()
        with rows_writer(f"{tmp}/part-00000.parquet") as writer:
            written = write_in_batches(
                writer, rows, args.batch_size, lambda part: scorer.model_rows(csr, part, user_ids)
            )
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    liked = float((csr.ratings >= model.config.liked_rating).mean())
    return {"path": args.path, "users": n_users, "rows": written, "seconds": seconds, "users_per_s": n_users / seconds, "cpu_s": cpu_seconds,
            "uncertified": scorer.uncertified_users, "setup_rss_gib": setup_rss / 2**30, "peak_rss_gib": rss.peak / 2**30,
            "films": csr.n_films, "ratings_per_user": csr.indptr[-1] / csr.n_users, "liked_share": liked,
            "device": str(device), "threads": torch.get_num_threads()}  # fmt: skip


def profile(args: argparse.Namespace) -> None:
    """cProfile of ``args.profile`` fast-path batches (after one warm-up batch), top 20 by own
    time. On one torch thread and no helper thread (cProfile sees only the calling thread), so
    the times add up to the whole step's CPU cost."""
    warm_up_cpu_math()
    torch.set_num_threads(1)
    device, bf16 = select_device(args.device)
    csr = random_ratings(args.batch_size * (args.profile + 1), FULL_FILMS, args.mean, args.seed)
    scorer = BatchScorer(random_model(csr.n_films, args.seed).to(device), np.arange(csr.n_films), csr.film_counts(),
                         "bench", args.top_n, device, bf16)  # fmt: skip
    user_ids = np.arange(csr.n_users)
    scorer.model_rows(csr, np.arange(args.batch_size), user_ids)
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for b in range(1, args.profile + 1):
        scorer.model_rows(csr, np.arange(b * args.batch_size, (b + 1) * args.batch_size), user_ids)
    profiler.disable()
    print(f"{(time.perf_counter() - started) / args.profile:.3f} s per batch of {args.batch_size} users "
          f"(profiled), load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=FULL_USERS)
    parser.add_argument("--films", type=int, default=None, help=f"default {FULL_FILMS:,}")
    parser.add_argument("--mean", type=float, default=98.0, help="ratings per user")
    parser.add_argument(
        "--exact-users", type=int, default=16_384, help="users the exact path scores"
    )
    parser.add_argument(
        "--paths", default="fast,exact,before", help="comma list of fast, exact, before"
    )
    parser.add_argument("--top-n", type=int, default=defaults.TOP_N)
    parser.add_argument("--batch-size", type=int, default=defaults.SCORE_BATCH_USERS)
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--profile", type=int, default=0, help="profile this many fast-path batches instead"
    )
    parser.add_argument("--path", help=argparse.SUPPRESS)  # the child process: one path, JSON out
    args = parser.parse_args()
    if args.path:
        print(json.dumps(score_once(args)))
        return
    if args.profile:
        profile(args)
        return

    load_before = os.getloadavg()
    results = []
    for path in args.paths.split(","):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--path", path]
        out = subprocess.run(
            cmd, check=True, capture_output=True, text=True, cwd=Path(__file__).parent
        ).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        print(
            f"{path}: {results[-1]['seconds']:.1f} s, load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    load_after = os.getloadavg()
    first = results[0]
    print(f"{args.users:,} users, {first['films']:,} films, 64-d, 200 neighbours, top {args.top_n}, "
          f"{first['ratings_per_user']:.1f} ratings/user ({first['liked_share']:.0%} liked); device "
          f"{first['device']}, {first['threads']} torch threads, {os.cpu_count()} cores")  # fmt: skip
    print(f"load average before {load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f}")  # fmt: skip
    print(f"{'path':<6} {'users':>9} {'seconds':>9} {'CPU s':>8} {'users/s':>9} {'uncertified':>11} "
          f"{'setup GiB':>9} {'peak GiB':>8}  all {args.users:,} users")  # fmt: skip
    for r in results:
        full = args.users / r["users_per_s"]
        print(f"{r['path']:<6} {r['users']:>9,} {r['seconds']:>9.1f} {r['cpu_s']:>8.1f} {r['users_per_s']:>9,.0f} "
              f"{r['uncertified']:>11,} {r['setup_rss_gib']:>9.2f} {r['peak_rss_gib']:>8.2f}  {full:,.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
