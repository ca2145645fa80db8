"""The whole nightly chain, stage by stage, timed end to end (issue 15); optionally Spark ALS beside it.

    .venv/bin/python bench/dag.py --scale 1.0                       # generate, then the chain
    .venv/bin/python bench/dag.py --scale 0.1 --reuse --with-als    # the side-by-side ratio
    .venv/bin/python bench/dag.py --scale 0.01 --postgres           # also publish to PostgreSQL
    .venv/bin/python bench/dag.py --scale 1.0 --reuse --converged   # and train without a time budget

Generates the drop (``recsys generate``, into ``DIR/raw-S-SEED``, the same place as
``bench/prep.py``; ``--reuse`` keeps one already there), then runs what the DAG
``movielens_recommendations`` runs, with its defaults (``recsys_core.defaults``) and its
arguments, into a fresh ``DIR/dag-warehouse-S-SEED``: ingest and features through the
venv's ``spark-submit`` (local[*], the DAG's driver memory and log4j file), then train,
score (the ``local`` engine, the default), check and publish (Parquet + SQLite in the
warehouse) as ``python jobs/…``. ``--postgres`` publishes again, to a throwaway PostgreSQL
server (``tests/pg.py``, fsync off; its own memory is not in the peak), shown beside the
SQLite publish. ``--with-als`` then runs ``bench/als.py`` (Spark MLlib ALS, rank 64, 10
iterations, fit + ``recommendForAllUsers(100)`` to Parquet) on the same ``ratings.csv``.
``--converged`` then trains the same model on the same features without a time budget
(``bench/convergence.py``, into ``DIR/converged-S-SEED``; with ``--reuse`` a finished one
there is kept) and prints the nightly model's validation NDCG@10 beside the converged one's,
with the curve in ``DIR/converged-S-SEED/convergence.png``.

Prints one table (wall seconds and peak RSS of the process tree, sampled every 0.2 s,
per stage, with the 1-minute load average at its end; the chain's total and peak; ALS and
the ratio chain ÷ ALS), then the validation NDCG@10 from the models manifest (the model,
the user AE alone, popularity), and writes the same as ``DIR/dag-S-SEED.json``. Not
timed: the DAG's ``validate`` and ``record_metrics`` tasks (seconds), Airflow's overhead.

The bar (issue 15), on the 2-core dev machine: at scale 1.0 the chain takes at most 20
minutes with a peak of at most 10 GiB; at scale 0.1 it takes at most 0.9x ALS's time,
both measured in one run (``--with-als``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import convergence
from prep import BIN, ROOT, measure

from recsys_core.defaults import RUN_PARAMS

CHAIN_BAR_S = 20 * 60  # scale 1.0: the whole chain in 20 minutes ...
PEAK_BAR_GIB = 10.0  # ... with at most 10 GiB
ALS_BAR_RATIO = 0.9  # scale 0.1: chain <= 0.9 x ALS
# As the DAG's parse-time settings (dags/movielens_recommendations.py): driver memory, the
# shuffle partitions (unset: Spark's own), Spark's own logging at WARN.
DRIVER_MEMORY = os.environ.get("RECSYS_SPARK_DRIVER_MEMORY", "4g")
SHUFFLE = os.environ.get("RECSYS_SPARK_SHUFFLE_PARTITIONS")
LOG4J = os.environ.get("RECSYS_SPARK_LOG4J", str(ROOT / "conf" / "log4j2.properties"))


def param(name: str) -> str:
    """A DAG Param's default as the DAG renders it (integers through ``| int``)."""
    spec = RUN_PARAMS[name]
    return str(int(spec.default)) if spec.kind == "integer" else str(spec.default)


def spark_submit(driver_memory: str) -> list[str]:
    """``spark-submit`` as the DAG's SparkSubmitOperator runs it on a local master."""
    cmd = [str(BIN / "spark-submit"), "--master", "local[*]", "--driver-memory", driver_memory]
    if SHUFFLE:
        cmd += ["--conf", f"spark.sql.shuffle.partitions={SHUFFLE}"]
    if LOG4J and Path(LOG4J).is_file():
        for side in ("driver", "executor"):
            cmd += ["--conf", f"spark.{side}.extraJavaOptions=-Dlog4j2.configurationFile=file:{LOG4J}"]  # fmt: skip
    return cmd


def chain(raw: Path, wh: Path, ds: str) -> list[tuple[str, list[str]]]:
    """(stage, command) of the DAG's tasks ingest .. publish, with the arguments the DAG passes."""
    submit, py = spark_submit(DRIVER_MEMORY), str(BIN / "python")
    common = ["--warehouse", str(wh), "--ds", ds]
    return [
        ("ingest", [*submit, "jobs/ingest.py", "--raw", str(raw), *common, "--encoding", param("encoding"),
                    "--layout", param("layout")]),
        ("features", [*submit, "jobs/features.py", *common, "--min-film-ratings", param("min_film_ratings")]),
        ("train", [py, "jobs/train.py", *common, "--epochs", param("max_epochs"), "--max-minutes",
                   param("max_minutes"), "--seed", param("seed")]),
        ("score", [py, "jobs/score.py", *common, "--top-n", param("top_n")]),
        ("check", [py, "jobs/check.py", *common, "--min-model-ratio", param("min_model_ratio")]),
        ("publish parquet+sqlite", [py, "jobs/publish.py", *common, "--keep", param("keep")]),
    ]  # fmt: skip


@contextmanager
def postgres_database() -> Iterator[str]:
    """The URL of a fresh database on a throwaway server (the tests' ``tests/pg.py``), stopped after."""
    sys.path.insert(0, str(ROOT))
    from tests.pg import PostgresServer, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise SystemExit("no PostgreSQL server binaries: scripts/ensure_postgres.sh installs them")
    server = PostgresServer(bin_dir).start()
    try:
        yield server.new_database()
    finally:
        server.stop()


def report(out: dict) -> str:
    """The one table (and the NDCG@10 lines) of a run's figures ``out``."""
    rows = [f"{'stage':<34} {'wall s':>8} {'peak GiB':>9} {'load':>5}"]

    def line(name: str, s: dict) -> None:
        load = f"{s['load']:>5.1f}" if "load" in s else ""
        rows.append(f"{name:<34} {s['wall_s']:>8.1f} {s['peak_gib']:>9.2f} {load}".rstrip())

    if "generate" in out:
        line("generate (not in the chain)", out["generate"])
    for name, s in out["stages"].items():
        line(name, s)
    line("chain total (SQLite sink)", out["chain"])
    if "chain_postgres" in out:
        line("publish parquet+postgres", out["publish parquet+postgres"])
        line("chain total (PostgreSQL sink)", out["chain_postgres"])
    if "als" in out:
        line(f"ALS fit + top {out['top_n']} (Spark)", out["als"])
        rows.append(f"{'chain / ALS':<34} {out['ratio_to_als']:>8.3f}")
    m = out["ndcg@10"]
    rows.append(f"\nvalidation NDCG@10: model {m['model']:.4f}, user AE alone {m['autoencoder']:.4f}, "
                f"popularity {m['popularity']:.4f} ({m['model'] / max(m['popularity'], 1e-9):.2f}x); "
                f"user AE best epoch {out['best_epoch']} of {out['epochs_run']}")  # fmt: skip
    wall, peak = out["chain"]["wall_s"], out["chain"]["peak_gib"]
    bars = [f"chain {wall:.0f} s <= {CHAIN_BAR_S} s: {wall <= CHAIN_BAR_S}",
            f"peak {peak:.2f} <= {PEAK_BAR_GIB} GiB: {peak <= PEAK_BAR_GIB}"]  # fmt: skip
    if "als" in out:
        ratio = out["ratio_to_als"]
        bars.append(f"chain / ALS {ratio:.3f} <= {ALS_BAR_RATIO}: {ratio <= ALS_BAR_RATIO}")
    if "convergence" in out:
        c = out["convergence"]
        bars.append(f"NDCG@10 / converged {c['ratio']:.4f} >= {c['bar']}: {c['within_1pct']}")
    rows.append("the bar (scale 1.0: time, peak and NDCG@10 against convergence; scale 0.1: the ratio): "
                + "; ".join(bars))
    return "\n".join(rows)


def fig(wall: float, peak: float, load: bool = True) -> dict:
    """One stage's figures: wall seconds, peak RSS (GiB) of its process tree and, with ``load``,
    the 1-minute load average as it ended (the machine is shared: read the times with it)."""
    return {"wall_s": round(wall, 1), "peak_gib": round(peak, 2)} | ({"load": round(os.getloadavg()[0], 2)} if load else {})  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42, help="generator seed")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "recsys-bench")
    parser.add_argument("--ds", default="2018-09-30")
    parser.add_argument("--reuse", action="store_true", help="reuse the drop if already generated")
    parser.add_argument("--postgres", action="store_true", help="publish to PostgreSQL as well")
    parser.add_argument("--with-als", action="store_true", help="run Spark ALS on the same ratings")
    parser.add_argument("--als-driver-memory", default="8g", help="ALS's --driver-memory")
    parser.add_argument("--converged", action="store_true",
                        help="train again without a time budget and compare (bench/convergence.py)")
    args = parser.parse_args()

    tag = f"{args.scale}-{args.seed}"
    raw, wh = args.dir / f"raw-{tag}", args.dir / f"dag-warehouse-{tag}"
    # no RECSYS_SQL_URL: the DAG's default sink, SQLite in the warehouse
    env = {k: v for k, v in os.environ.items() if k != "RECSYS_SQL_URL"}
    env.update(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               SPARK_LOCAL_IP=os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"))  # fmt: skip
    out: dict = {"scale": args.scale, "seed": args.seed, "ds": args.ds, "date": date.today().isoformat(),
                 "cores": os.cpu_count(), "load_before": os.getloadavg(), "top_n": int(param("top_n")),
                 "driver_memory": DRIVER_MEMORY, "stages": {}}  # fmt: skip
    if not (args.reuse and (raw / "ratings.csv").exists()):
        out["generate"] = fig(*measure("generate", [str(BIN / "recsys"), "generate", "--out", str(raw), "--scale",
                                                    str(args.scale), "--seed", str(args.seed)], env))  # fmt: skip
    shutil.rmtree(wh, ignore_errors=True)  # every run from an empty warehouse: a first publish
    for name, cmd in chain(raw, wh, args.ds):
        out["stages"][name] = fig(*measure(name, cmd, env))
    stages = out["stages"].values()
    out["chain"] = fig(sum(s["wall_s"] for s in stages), max(s["peak_gib"] for s in stages), load=False)  # fmt: skip
    if args.postgres:
        with postgres_database() as url:
            cmd = chain(raw, wh, args.ds)[-1][1]  # the same publish; the URL via env, never echoed
            pg = fig(*measure("publish (postgres)", cmd, {**env, "RECSYS_SQL_URL": url}))
        out["publish parquet+postgres"] = pg
        sqlite = out["stages"]["publish parquet+sqlite"]
        out["chain_postgres"] = fig(out["chain"]["wall_s"] - sqlite["wall_s"] + pg["wall_s"],
                                    max([s["peak_gib"] for s in stages if s is not sqlite] + [pg["peak_gib"]]),
                                    load=False)  # fmt: skip
    if args.with_als:
        cmd = [*spark_submit(args.als_driver_memory), "bench/als.py", "--raw", str(raw), "--ds", args.ds,
               "--out", str(args.dir / f"als-{tag}"), "--top-n", param("top_n")]  # fmt: skip
        out["als"] = fig(*measure("als", cmd, env))
        out["ratio_to_als"] = round(out["chain"]["wall_s"] / out["als"]["wall_s"], 3)
    manifest = convergence.manifest(wh, args.ds)
    out["ndcg@10"] = {k: manifest["metrics"][k]["ndcg@10"] for k in ("model", "autoencoder", "popularity")}  # fmt: skip
    out.update(counts=manifest["counts"], device=manifest["device"], best_epoch=manifest.get("best_epoch"),
               epochs_run=manifest.get("epochs_run"), load_after=os.getloadavg())  # fmt: skip

    if args.converged:
        print()
        out["convergence"] = convergence.run(wh, args.dir / f"converged-{tag}", args.ds, env, args.reuse)
    c = out["counts"]
    print(f"\nscale {args.scale}, seed {args.seed}, ds {args.ds}: {c['users']:,} users, {c['films']:,} films, "
          f"{c['ratings']:,} ratings; {out['cores']} cores, training on {out['device']}; load average "
          f"{out['load_before'][0]:.2f} before, {out['load_after'][0]:.2f} after")  # fmt: skip
    print(report(out))
    path = args.dir / f"dag-{tag}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"figures: {path}")


if __name__ == "__main__":
    main()
