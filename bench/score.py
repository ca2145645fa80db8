"""Benchmark scoring, the quality gate and publishing on a trained warehouse.

    .venv/bin/python bench/score.py --warehouse /tmp/recsys-bench/warehouse-1.0-42
    .venv/bin/python bench/score.py --warehouse DIR --device cuda --skip-postgres

Needs ``features/`` and ``models/`` for ``--ds`` (``bench/prep.py`` then ``bench/train.py``).
Runs ``jobs/score.py``, ``jobs/check.py`` and ``jobs/publish.py`` (Parquet + SQLite in the
warehouse, then Parquet + a throwaway PostgreSQL server started like the tests do) and
prints wall time and peak memory of each. Targets on the 2-core dev machine at full scale
(283,228 users, N = 100, 28.3M rows): scoring under 2 minutes, PostgreSQL publish under 2.
The PostgreSQL server runs with fsync off (a benchmark of the load path, not of disks).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from prep import BIN, ROOT, measure

from recsys_core.paths import Warehouse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", type=Path, default=Path("/tmp/recsys-bench/warehouse-1.0-42"))
    parser.add_argument("--ds", default="2018-09-30")
    parser.add_argument("--top-n", type=int, default=100)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()

    wh = Warehouse(str(args.warehouse))
    py = str(BIN / "python")
    common = ["--warehouse", str(args.warehouse), "--ds", args.ds]
    env = {k: v for k, v in os.environ.items() if k != "RECSYS_SQL_URL"}
    results = [
        ("score", *measure("score", [py, "jobs/score.py", *common, "--top-n", str(args.top_n),
                                     "--device", args.device], env)),
        ("check", *measure("check", [py, "jobs/check.py", *common], env)),
        ("publish parquet+sqlite", *measure("publish", [py, "jobs/publish.py", *common], env)),
    ]  # fmt: skip
    if not args.skip_postgres:
        sys.path.insert(0, str(ROOT))
        from tests.pg import PostgresServer, find_bin_dir

        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise SystemExit("no PostgreSQL server binaries: run scripts/ensure_postgres.sh or --skip-postgres")
        server = PostgresServer(bin_dir).start()
        try:
            url = server.new_database()
            results.append(("publish parquet+postgres", *measure(  # the URL via env: not echoed
                "publish (postgres)", [py, "jobs/publish.py", *common], {**env, "RECSYS_SQL_URL": url})))  # fmt: skip
        finally:
            server.stop()

    meta = json.loads(Path(f"{wh.recommendations_staging(args.ds)}/_scoring.json").read_text())
    print(f"\n{meta['users']:,} users ({meta['popularity_users']:,} by popularity), {meta['films']:,} films, "
          f"top {meta['top_n']}, {meta['rows']:,} rows; device {meta['device']}; {os.cpu_count()} cores")  # fmt: skip
    print(f"{'step':<26} {'wall s':>8} {'peak GiB':>9}")
    for name, wall, peak in results:
        print(f"{name:<26} {wall:>8.1f} {peak:>9.2f}")
    print(f"scoring inside the job: {meta['seconds']:.1f} s ({meta['users'] / meta['seconds']:,.0f} users/s)")


if __name__ == "__main__":
    main()
