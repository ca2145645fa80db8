"""The chain at one scale on a machine with a GPU and without Java: generate, features, train, score, check, publish.

    PYTHONUNBUFFERED=1 python3 bench/gpu_chain.py --scale 1.0 --dir /tmp/g --out $OUT --device cuda
    .venv/bin/python bench/gpu_chain.py --scale 0.01 --dir /tmp/gc --out /tmp/gc/out --device cpu

For the lent GPU machine (issue 15, item 5), which has torch, numpy, pyarrow but no Java,
no Spark, no Airflow and no install of this project: the script puts the repository root
on ``sys.path`` itself and imports nothing that needs pyspark, Airflow or psycopg. In one
process, stage by stage:

1. generate: ``recsys_core.data.generator.generate`` (what ``recsys generate`` runs) into
   ``DIR/raw-S-SEED``; ``--reuse`` keeps a complete one already there;
2. features: ``features/ds=…`` of ``DIR/warehouse-S-SEED`` by ``bench/features_arrow.py``
   (pyarrow + numpy; the same partition as the Spark jobs ingest + features write for a
   clean drop, see tests/test_features_arrow.py; the Spark jobs are the product);
3. train: ``run_training`` with ``TrainConfig``'s defaults on ``--device`` (``--max-minutes``
   and ``--max-epochs`` override its caps when given; ``--fit-in S`` sets the time cap when
   training starts so that the whole run should end within S seconds, for a machine lent
   for a fixed time);
4. score: ``run_scoring`` with ``ScoreConfig(top_n=100, device=--device)``;
5. check: the quality gate, ``run_check``;
6. publish: the Parquet side of publish (``--publish parquet``, the default), or Parquet +
   SQLite as ``jobs/publish.py`` (``--publish sqlite``), or nothing (``none``).

After each stage it prints one line and rewrites ``OUT/gpu_chain.json`` (so a run killed
at a time limit still leaves what it finished; on SIGTERM it also records the stage it was
in, with its time so far): wall seconds and peak RSS (this process, sampled every 0.1 s)
per stage, ``torch.cuda.max_memory_allocated()`` per stage, the
device, torch and library versions; the drop's and the features' counts; the models
manifest's validation metrics (model, user AE alone, popularity), epochs run, best epoch,
the item-item search summary, the per-epoch history; the scoring summary and users/s;
the gate's figures. Every stage's log goes to ``OUT/chain.log`` (rotated at 15 MiB, one
old file kept); the models and features manifests are copied to ``OUT``. At most 5 files
in ``OUT``, no folders.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import logging.handlers
import os
import platform
import resource
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

# before the imports below (torch's takes seconds): --fit-in counts from here
STARTED = time.monotonic()
ROOT = Path(__file__).resolve().parents[1]
# no install on the GPU machine: the repository and bench/ as they are
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import numpy as np
import pyarrow as pa
import torch
from features_arrow import build_features

from recsys_core.data.generator import generate
from recsys_core.logging_setup import configure_logging
from recsys_core.paths import Warehouse
from recsys_core.publish.parquet_table import publish_partition
from recsys_core.publish.publish import checked_model_version, run_publish
from recsys_core.scoring.check import run_check
from recsys_core.scoring.score import ScoreConfig, run_scoring
from recsys_core.training.config import TrainConfig
from recsys_core.training.train import run_training

log = logging.getLogger("gpu_chain")
GIB = 2**30
COMPLETE = "_generated"  # marker of a finished drop (for --reuse)
LOG_BYTES = 15 * 2**20  # the device tool brings back files under 16 MiB


class PeakRSS:
    """Peak resident memory of this process while a stage runs: /proc/self/statm every 0.1 s."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self._stop.wait(0.1)

    def __enter__(self) -> Self:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


class Report:
    """The run's figures, rewritten to ``OUT/gpu_chain.json`` after every stage."""

    def __init__(self, out: Path, cuda: bool, doc: dict) -> None:
        self.out, self.cuda, self.doc = out, cuda, doc

    def write(self) -> None:
        tmp = self.out / ".gpu_chain.json.tmp"
        tmp.write_text(json.dumps(self.doc, indent=2, default=str))
        os.replace(tmp, self.out / "gpu_chain.json")

    @contextmanager
    def stage(self, name: str) -> Iterator[dict]:
        """Time a stage; ``yield`` a dict the stage fills with its own figures."""
        figures: dict = {}
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        log.info("=== stage %s", name)
        started, ok = time.monotonic(), False
        with PeakRSS() as rss:
            try:
                yield figures
                ok = True
            except BaseException as exc:
                figures["error"] = f"{type(exc).__name__}: {exc}"
                figures["traceback"] = traceback.format_exc()[-4000:]
                raise
            finally:
                if self.cuda:
                    torch.cuda.synchronize()
                wall = time.monotonic() - started
                self.doc["stages"][name] = {
                    "ok": ok, "wall_s": round(wall, 2), "peak_rss_gib": round(rss.peak / GIB, 3),
                    **({"cuda_max_allocated_gib": round(torch.cuda.max_memory_allocated() / GIB, 3),
                        "cuda_max_reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 3)}
                       if self.cuda else {}),
                    **figures,
                }  # fmt: skip
                self.doc["process_max_rss_gib"] = round(
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3
                )
                self.write()
                cuda = (
                    f", cuda peak {torch.cuda.max_memory_allocated() / GIB:.2f} GiB"
                    if self.cuda
                    else ""
                )
                print(f"[gpu_chain] {name}: {'ok' if ok else 'FAILED'} in {wall:.1f} s, peak RSS "
                      f"{rss.peak / GIB:.2f} GiB{cuda}", flush=True)  # fmt: skip


def environment(args: argparse.Namespace) -> dict:
    cuda = torch.cuda.is_available()
    return {
        "argv": sys.argv,
        "scale": args.scale,
        "seed": args.seed,
        "ds": args.ds,
        "device_requested": args.device,
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "cuda_runtime": torch.version.cuda,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pyarrow": pa.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "stages": {},
    }


def log_to(out: Path) -> None:
    """Every stage's log to stderr (as the jobs) and to ``OUT/chain.log``."""
    configure_logging()
    handler = logging.handlers.RotatingFileHandler(
        out / "chain.log", maxBytes=LOG_BYTES, backupCount=1
    )
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    logging.getLogger().addHandler(handler)


def train_config(args: argparse.Namespace, elapsed_s: float) -> TrainConfig:
    """TrainConfig's defaults on ``--device``; ``--max-minutes``/``--max-epochs`` when given, else with
    ``--fit-in`` the time cap that leaves ``--reserve-s`` for the rest after ``elapsed_s`` so far."""
    config = TrainConfig(device=args.device)
    max_minutes = args.max_minutes
    if max_minutes is None and args.fit_in is not None:
        max_minutes = max(1.0, (args.fit_in - elapsed_s - args.reserve_s) / 60)
    caps = {"max_minutes": max_minutes, "max_epochs": args.max_epochs}
    return dataclasses.replace(config, **{k: v for k, v in caps.items() if v is not None})


def training_figures(manifest: dict) -> dict:
    keys = ("device", "bf16", "counts", "batch_size", "sampled_softmax", "epochs_run", "best_epoch", "refit",
            "item_item", "user_ae_seconds", "wall_seconds", "film_ae", "metrics", "history")  # fmt: skip
    return {k: manifest.get(k) for k in keys}


def publish(wh: Warehouse, ds: str, how: str) -> dict:
    """The Parquet side of publish (as ``run_publish`` does it), or all of ``jobs/publish.py`` with SQLite."""
    if how == "sqlite":
        return run_publish(wh, ds)
    source = wh.recommendations_staging(ds)
    version = checked_model_version(wh, ds, source)
    return {
        "rows": publish_partition(source, wh.recommendations(ds), ds, model_version=version),
        "sink": "parquet",
    }


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--scale", type=float, default=1.0)
    add("--seed", type=int, default=42, help="generator seed")
    add("--dir", type=Path, required=True, help="where the drop and the warehouse go")
    add("--out", type=Path, required=True, help="gpu_chain.json, chain.log and the manifests")
    add("--ds", default="2018-09-30")
    add("--device", default="cuda", choices=["auto", "cpu", "cuda"])
    add(
        "--reuse",
        action="store_true",
        help="keep a complete drop (and its features) already in --dir",
    )
    add(
        "--max-minutes",
        type=float,
        default=None,
        help="training's time cap (default: TrainConfig's)",
    )
    add(
        "--max-epochs", type=int, default=None, help="training's epoch cap (default: TrainConfig's)"
    )
    add(
        "--fit-in",
        type=float,
        default=None,
        metavar="S",
        help="without --max-minutes: training's time cap chosen when training starts so that the run "
        "should end within S seconds of its start, --reserve-s kept for the stages after the cap",
    )
    add(
        "--reserve-s",
        type=float,
        default=150.0,
        help="with --fit-in: seconds kept for film AE, saving, score, check, publish (default %(default)s)",
    )
    add("--publish", default="parquet", choices=["parquet", "sqlite", "none"])
    return parser.parse_args()


def main() -> int:
    started = STARTED
    args = arguments()
    args.out.mkdir(parents=True, exist_ok=True)
    log_to(args.out)
    # a run stopped by its time limit (SIGTERM) still records the stage it was in
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    cuda = args.device != "cpu" and torch.cuda.is_available()
    doc = environment(args)  # starts CUDA (its context is not in any stage's time)
    doc["cuda_init_s"] = round(time.monotonic() - started, 2)
    report = Report(args.out, cuda, doc)
    report.write()
    raw = args.dir / f"raw-{args.scale}-{args.seed}"
    wh = Warehouse(str(args.dir / f"warehouse-{args.scale}-{args.seed}"))
    ds = args.ds

    reuse = args.reuse and (raw / COMPLETE).exists()
    with report.stage("generate") as fig:
        if reuse:
            fig["reused"] = True
        else:
            shutil.rmtree(raw, ignore_errors=True)
            fig.update(dataclasses.asdict(generate(raw, scale=args.scale, seed=args.seed)))
            (raw / COMPLETE).touch()
        fig["csv_bytes"] = sum(p.stat().st_size for p in raw.glob("*.csv"))

    features_manifest = Path(wh.features(ds)) / "manifest.json"
    with report.stage("features (pyarrow)") as fig:
        if reuse and features_manifest.exists():
            fig["reused"] = True
        else:
            build_features(raw, wh, ds)
        fig.update(json.loads(features_manifest.read_text())["counts"])
        shutil.copyfile(features_manifest, args.out / "features_manifest.json")

    with report.stage("train") as fig:
        config = train_config(args, time.monotonic() - started)
        fig["config"] = {
            "max_minutes": config.max_minutes,
            "max_epochs": config.max_epochs,
            "device": config.device,
        }
        run = run_training(wh, ds, config)
        fig.update(training_figures(run.manifest))
        shutil.copyfile(Path(wh.models(ds)) / "manifest.json", args.out / "model_manifest.json")

    with report.stage("score") as fig:
        summary = run_scoring(wh, ds, ScoreConfig(top_n=100, device=args.device))
        fig["summary"] = summary
        fig["users_per_s"] = round(summary["users"] / max(summary["seconds"], 1e-9), 1)

    with report.stage("check") as fig:
        fig["figures"] = run_check(wh, ds).figures

    if args.publish != "none":
        with report.stage(f"publish {args.publish}") as fig:
            fig["summary"] = publish(wh, ds, args.publish)

    stages = report.doc["stages"]
    report.doc["chain_s_after_generate"] = round(
        sum(s["wall_s"] for n, s in stages.items() if n != "generate"), 2
    )
    report.doc["total_s"] = round(time.monotonic() - started, 2)
    report.doc["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report.write()
    print(summary_table(report.doc), flush=True)
    return 0


def summary_table(doc: dict) -> str:
    lines = [f"\n{'stage':<22} {'wall s':>8} {'peak RSS GiB':>13} {'cuda GiB':>9}"]
    for name, s in doc["stages"].items():
        lines.append(f"{name:<22} {s['wall_s']:>8.1f} {s['peak_rss_gib']:>13.2f} "
                     f"{s.get('cuda_max_allocated_gib', 0):>9.2f}")  # fmt: skip
    lines.append(f"{'after generate':<22} {doc['chain_s_after_generate']:>8.1f}")
    train = doc["stages"].get("train", {})
    metrics = train.get("metrics") or {}
    for who, m in metrics.items():
        lines.append(f"validation {who}: " + ", ".join(f"{k} {v:.4f}" for k, v in m.items()))
    if train:
        lines.append(f"epochs run {train.get('epochs_run')}, best epoch {train.get('best_epoch')}; "
                     f"device {doc['cuda_device'] or 'cpu'}, torch {doc['torch']}")  # fmt: skip
    if "score" in doc["stages"]:
        lines.append(f"scoring: {doc['stages']['score']['users_per_s']:,.0f} users/s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
