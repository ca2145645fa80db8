"""Benchmark the prep stages: generate a drop, then ingest and features with spark-submit.

    .venv/bin/python bench/prep.py --scale 1.0            # the full 27.7M-rating shape
    .venv/bin/python bench/prep.py --scale 0.01 --reuse   # reuse a drop generated before

Prints wall time and peak memory (RSS of the whole process tree: driver JVM and any
Python workers, sampled every 0.2 s) per stage. Targets on the 2-core dev machine at
scale 1.0: generate < 15 min and < 8 GB; ingest + features < 5 min together, < 12 GB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(name: str, cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``cmd``; return (wall seconds, peak tree RSS in GiB). Fails loudly on error."""
    print(f"--- {name}: {' '.join(cmd)}", flush=True)
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(ps))
        time.sleep(0.2)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed with exit code {proc.returncode}")
    return wall, peak / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "recsys-bench")
    parser.add_argument("--ds", default="2018-09-30")
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--reuse", action="store_true", help="reuse the drop if already generated")
    args = parser.parse_args()

    raw = args.dir / f"raw-{args.scale}-{args.seed}"
    wh = args.dir / f"warehouse-{args.scale}-{args.seed}"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1")}
    submit = [str(BIN / "spark-submit"), "--master", "local[*]", "--driver-memory", args.driver_memory]
    results: list[tuple[str, float, float]] = []
    if not (args.reuse and (raw / "ratings.csv").exists()):
        results.append(("generate", *measure("generate", [str(BIN / "recsys"), "generate", "--out", str(raw),
                                                          "--scale", str(args.scale), "--seed", str(args.seed)], env)))
    results.append(("ingest", *measure("ingest", [*submit, "jobs/ingest.py", "--raw", str(raw),
                                                  "--warehouse", str(wh), "--ds", args.ds], env)))
    results.append(("features", *measure("features", [*submit, "jobs/features.py", "--warehouse", str(wh),
                                                      "--ds", args.ds], env)))
    print(f"\nscale {args.scale}, seed {args.seed}, {os.cpu_count()} cores, driver memory {args.driver_memory}")
    print(f"{'stage':<10} {'wall s':>8} {'peak GiB':>9}")
    for name, wall, peak in results:
        print(f"{name:<10} {wall:>8.1f} {peak:>9.2f}")
    prep = [r for r in results if r[0] in ("ingest", "features")]
    print(f"{'ingest+features':<10} {sum(r[1] for r in prep):>8.1f} {max(r[2] for r in prep):>9.2f}")


if __name__ == "__main__":
    main()
