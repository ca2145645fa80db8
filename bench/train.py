"""Benchmark training: run ``jobs/train.py`` on a features partition and report its figures.

    .venv/bin/python bench/train.py --warehouse /tmp/recsys-bench/warehouse-1.0-42
    .venv/bin/python bench/train.py --warehouse DIR --device cuda -- --epochs 20

Prints peak memory (RSS of the process tree, sampled every 0.2 s), total wall time, the
time of one user-AE epoch, validation NDCG@10 / Recall@20 per epoch against popularity,
and the time to convergence (end of the best epoch). Target on the 2-core dev machine at
full scale: a complete training under 30 minutes and 12 GB. Arguments after ``--`` go to
``jobs/train.py`` unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from prep import BIN, measure

from recsys_core.paths import Warehouse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", type=Path, default=Path("/tmp/recsys-bench/warehouse-1.0-42"))
    parser.add_argument("--ds", default="2018-09-30")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("rest", nargs="*", help="extra jobs/train.py arguments (after --)")
    args = parser.parse_args()

    cmd = [str(BIN / "python"), "jobs/train.py", "--warehouse", str(args.warehouse), "--ds", args.ds,
           "--device", args.device, *args.rest]  # fmt: skip
    wall, peak = measure("train", cmd, dict(os.environ))
    manifest_path = f"{Warehouse(str(args.warehouse)).models(args.ds)}/manifest.json"
    m = json.loads(Path(manifest_path).read_text())
    history = m["history"]
    print(f"\n{m['counts']['users']:,} users, {m['counts']['films']:,} films, {m['counts']['ratings']:,} ratings; "
          f"{os.cpu_count()} cores; device {m['device']}{' bf16' if m['bf16'] else ''}; batch {m['batch_size']}, "
          f"{'sampled' if m['sampled_softmax'] else 'exact'} softmax")  # fmt: skip
    print(f"{'epoch':>5} {'seconds':>8} {'users/s':>8} {'loss':>9} {'ndcg@10':>8} {'recall@20':>9}")
    for h in history:
        print(f"{h['epoch']:>5} {h['seconds']:>8.1f} {h['users_per_s']:>8.0f} {h['loss']:>9.2f} "
              f"{h['ndcg@10']:>8.4f} {h['recall@20']:>9.4f}")  # fmt: skip
    pop = m["metrics"]["popularity"]
    print(f"{'pop':>5} {'':>8} {'':>8} {'':>9} {pop['ndcg@10']:>8.4f} {pop['recall@20']:>9.4f}")
    to_best = sum(h["seconds"] for h in history[: m["best_epoch"]])
    first = history[0]["seconds"]
    print(f"\nwall {wall:.1f} s (job), user AE {m['user_ae_seconds']:.1f} s, peak {peak:.2f} GiB")
    print(f"one epoch (first, incl. validation) {first:.1f} s; best epoch {m['best_epoch']} of {m['epochs_run']}, "
          f"reached after {to_best:.1f} s of user-AE training")  # fmt: skip
    best = m["metrics"]["model"]
    print(f"model ndcg@10 {best['ndcg@10']:.4f} recall@20 {best['recall@20']:.4f}; "
          f"popularity {pop['ndcg@10']:.4f} / {pop['recall@20']:.4f} "
          f"({best['ndcg@10'] / max(pop['ndcg@10'], 1e-9):.2f}x ndcg)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
