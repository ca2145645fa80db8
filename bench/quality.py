"""The evaluation set in one command: the model against the baselines on several datasets
and training seeds, under ``recsys evaluate``'s protocol (temporal per-user holdout).

    PYSPARK_PYTHON=.venv/bin/python SPARK_LOCAL_IP=127.0.0.1 \\
    .venv/bin/python bench/quality.py --out /work/quality [--seeds 1,2,3] \\
        [--datasets ml-latest-small,gen-temporal-0.003-s3,...] [--methods model,ease,...]

Datasets (``--datasets``, default all of them; ``--list`` prints them):

- ``ml-latest-small``: the real release (``--mls``, never copied into the repository);
- ``ml-latest-small@2008-01-01``, ``ml-latest-small@2013-01-01``: the same cut as of a date
  (ratings and tags before it only: other users, films and eras), written to OUT/work/data;
- generated drops (``recsys_core.data.generator``) of several shapes, scales and seeds,
  written to OUT/work/data: time-free MovieLens-shaped ones, ones with time in them
  (``--temporal``: release bursts, drifting taste) and sparse release-driven ones
  (``--release-driven``: most users with a handful of ratings, most ratings of new films).

Per dataset, ``recsys_core.evaluation.run.run_evaluation`` runs the baselines once (with
the first seed; they are deterministic apart from ALS's seed and the sampling of tuning
users past 5,000) and the model once per seed (``TrainConfig(seed=...)``: the shipped
defaults), sharing one Spark session. Each run's figures go to OUT/runs/DATASET/seedS.json
when it ends: a rerun skips what is there (the full set takes hours on two cores), and
methods added later run on their own. OUT/quality.md and OUT/quality.json get, per dataset,
NDCG@10, Recall@20 and catalogue coverage@10 as mean ± sd over the runs of every method,
and the model's ratio to the best baseline of each metric.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys_core.defaults import MIN_MODEL_RATIO
from recsys_core.evaluation.run import DEFAULT_METHODS, MODEL

log = logging.getLogger("quality")

METRICS = ("ndcg@10", "recall@20", "catalog_coverage@10")
LABELS = {"ndcg@10": "NDCG@10", "recall@20": "Recall@20", "catalog_coverage@10": "coverage@10"}
DEFAULT_SEEDS = (1, 2, 3)
DEFAULT_QUALITY_METHODS = (MODEL, "popularity", "popularity_recent", "ease", "edlae", "ease_recency",
                           "edlae_recency", "item_knn", "als_implicit")  # fmt: skip


@dataclass(frozen=True)
class Dataset:
    name: str
    kind: str  # real | cut | generated
    cut: str | None = None  # YYYY-MM-DD: ratings and tags before it (UTC)
    scale: float = 0.0
    seed: int = 0
    shape: str | None = None  # None (time-free) | movielens | release_driven
    about: str = ""


DATASETS = {d.name: d for d in (
    Dataset("ml-latest-small", "real", about="the real release, 1996-2018"),
    Dataset("ml-latest-small@2008-01-01", "cut", cut="2008-01-01", about="ml-latest-small as of 2008-01-01"),
    Dataset("ml-latest-small@2013-01-01", "cut", cut="2013-01-01", about="ml-latest-small as of 2013-01-01"),
    Dataset("gen-0.005-s7", "generated", scale=0.005, seed=7, about="time-free MovieLens shape"),
    Dataset("gen-temporal-0.003-s3", "generated", scale=0.003, seed=3, shape="movielens",
            about="release bursts and drifting taste (--temporal)"),
    Dataset("gen-release-0.005-s5", "generated", scale=0.005, seed=5, shape="release_driven",
            about="sparse and release-driven (--release-driven)"),
    Dataset("gen-0.02-s7", "generated", scale=0.02, seed=7, about="time-free, larger (bench/RESULTS.md's drop)"),
    Dataset("gen-temporal-0.02-s11", "generated", scale=0.02, seed=11, shape="movielens",
            about="release bursts and drifting taste, larger"),
    Dataset("gen-release-0.03-s13", "generated", scale=0.03, seed=13, shape="release_driven",
            about="sparse and release-driven, larger"),
)}  # fmt: skip


def _csv(path: Path) -> pa.Table:
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(strings_can_be_null=False))


def _write_csv(table: pa.Table, path: Path) -> None:
    """CSV as GroupLens writes it (pandas: fields quoted only when needed, LF)."""
    table.to_pandas().to_csv(path, index=False, lineterminator="\n")


def prepare(ds: Dataset, mls: Path, data_root: Path) -> Path:
    """The drop's directory, made once (a ``.done`` marker says it is complete)."""
    if ds.kind == "real":
        return mls
    out = data_root / ds.name
    if (out / ".done").exists():
        return out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t = time.monotonic()
    if ds.kind == "cut":
        cut = int(datetime.strptime(ds.cut, "%Y-%m-%d").replace(tzinfo=UTC).timestamp())
        for src in sorted(mls.iterdir()):
            if src.name in ("ratings.csv", "tags.csv"):
                table = _csv(src)
                _write_csv(table.filter(pc.less(table["timestamp"], cut)), out / src.name)
            elif src.suffix == ".csv":
                shutil.copyfile(src, out / src.name)
    else:
        from recsys_core.data.generator import generate
        from recsys_core.data.synthetic_time import TemporalShape

        temporal = getattr(TemporalShape, ds.shape)() if ds.shape else None
        generate(out, scale=ds.scale, seed=ds.seed, temporal=temporal)
    (out / ".done").write_text(datetime.now(UTC).isoformat())
    log.info("[quality] %s: drop written to %s in %.0fs", ds.name, out, time.monotonic() - t)
    return out


def load_runs(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(run_dir.glob("seed*.json"))]


def summary(results: dict) -> dict:
    """What a run file keeps of run_evaluation's results."""
    keep = {}
    for name, info in results["methods"].items():
        keep[name] = {"metrics": info["metrics"], "params": info.get("params") if name != MODEL else None,
                      "seconds": info.get("seconds")}  # fmt: skip
    model = results.get("model") or {}
    return {"seed": results["seed"], "ds": results["ds"], "split": results["split"],
            "catalog_films": results["catalog_films"], "training_users": results["training_users"],
            "methods": keep, "model": {**{k: model.get(k) for k in ("best_epoch", "epochs_run", "item_item")},
                                       "gate": gate(model["metrics"]) if model.get("metrics") else None},
            "timings": results["timings"]}  # fmt: skip


def gate(metrics: dict) -> dict:
    """The nightly gate's model-quality verdict on one training run's validation ``metrics``
    (the manifest's), by ``jobs/check.py``'s own check: validation NDCG@10 at least
    ``MIN_MODEL_RATIO`` x popularity's on the same users."""
    from recsys_core.scoring.check import Report, check_model_quality

    report = Report(ds="evaluation")
    check_model_quality(report, {"metrics": metrics}, MIN_MODEL_RATIO)
    model, popularity = report.figures["model_ndcg@10"], report.figures["popularity_ndcg@10"]
    ratio = model / popularity if popularity > 0 else (float("inf") if model > 0 else float("nan"))
    return {"model_ndcg@10": model, "popularity_ndcg@10": popularity, "ratio": ratio, "passes": report.passed}


def run_dataset(ds: Dataset, data_dir: Path, out: Path, seeds: list[int], methods: list[str], spark_of,
                device: str | None) -> None:  # fmt: skip
    """Run what is missing of ``methods`` x ``seeds`` on one dataset (``spark_of()``: the
    shared Spark session, started on first use)."""
    from recsys_core.evaluation.run import run_evaluation

    run_dir = out / "runs" / ds.name
    run_dir.mkdir(parents=True, exist_ok=True)
    baselines = [m for m in methods if m != MODEL]
    for i, seed in enumerate(seeds):
        runs = load_runs(run_dir)
        have_model = {r["seed"] for r in runs if MODEL in r["methods"]}
        have_baselines = {m for r in runs for m in r["methods"] if m != MODEL}
        todo = [MODEL] if MODEL in methods and seed not in have_model else []
        missing = [m for m in baselines if m not in have_baselines]
        if missing and (todo or i == len(seeds) - 1):  # baselines ride along with the first model run
            todo += missing
        if not todo:
            log.info("[quality] %s seed %d: done before, skipped", ds.name, seed)
            continue
        k = 1
        while (run_dir / f"seed{seed}{'' if k == 1 else f'-{k}'}.json").exists():
            k += 1
        target = run_dir / f"seed{seed}{'' if k == 1 else f'-{k}'}.json"
        log.info("[quality] %s seed %d: running %s", ds.name, seed, ",".join(todo))
        t = time.monotonic()
        results = run_evaluation(data_dir, out / "work" / "reports" / ds.name / target.stem, seed=seed,
                                 methods=todo, spark=spark_of(), work_dir=out / "work" / "eval" / ds.name,
                                 device=device, write_report=False)  # fmt: skip
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary(results), indent=1))
        tmp.replace(target)
        shown = " ".join(f"{m} {results['methods'][m]['metrics']['ndcg@10']:.4f}" for m in todo)
        log.info("[quality] %s seed %d: done in %.0fs (NDCG@10 %s)", ds.name, seed, time.monotonic() - t, shown)


def _stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values), "values": values}  # fmt: skip


def aggregate(ds: Dataset, runs: list[dict], methods: list[str], seeds: list[int]) -> dict:
    """Per method and metric: mean, sd and values over the runs (the model: one per seed);
    the model's ratio to the best baseline of each metric and its coverage against EASE's."""
    table: dict[str, dict] = {}
    for m in methods:
        values = {k: [] for k in METRICS}
        for r in runs:
            if m in r["methods"] and (m != MODEL or r["seed"] in seeds):
                for k in METRICS:
                    values[k].append(r["methods"][m]["metrics"][k])
        if values[METRICS[0]]:
            table[m] = {k: _stats(v) for k, v in values.items()}
    out: dict = {"about": ds.about, "methods": table}
    first = next((r for r in runs if r["split"]), None)
    if first:
        s = first["split"]
        out["data"] = {k: s[k] for k in ("ratings", "users", "films", "evaluated_users", "last_rating")}
    if MODEL in table:
        ratios = {}
        for k in METRICS[:2]:
            rivals = {m: v[k]["mean"] for m, v in table.items() if m != MODEL}
            if rivals:
                best = max(rivals, key=rivals.get)
                ratios[k] = {"best": best, "ratio": table[MODEL][k]["mean"] / rivals[best] if rivals[best] else None}
        if "ease" in table:
            cov = table["ease"]["catalog_coverage@10"]["mean"]
            ratios["coverage_vs_ease"] = table[MODEL]["catalog_coverage@10"]["mean"] / cov if cov else None
        out["model_ratios"] = ratios
    gates = [r["model"]["gate"] for r in runs
             if MODEL in r["methods"] and r["seed"] in seeds and (r.get("model") or {}).get("gate")]  # fmt: skip
    if gates:
        out["gate"] = {"runs": len(gates), "passed": sum(g["passes"] for g in gates),
                       "lowest_ratio": min((g["ratio"] for g in gates), key=lambda x: (not math.isnan(x), x))}  # fmt: skip  # NaN (no figure) first
    return out


def render(report: dict) -> str:
    lines = [f"# Evaluation set ({report['date']})", "", f"`{report['command']}`", "",
             ("Mean ± sd over runs (n): the model once per training seed, baselines once per dataset. "
              "Ratios: the model's mean over the best baseline's of that metric."), ""]  # fmt: skip
    for name, d in report["datasets"].items():
        data = d.get("data", {})
        extra = (f": {data['ratings']:,} ratings, {data['users']:,} users, {data['films']:,} films, "
                 f"{data['evaluated_users']:,} evaluated users" if data else "")  # fmt: skip
        lines += [f"## {name}", "", f"{d['about']}{extra}", "",
                  "| method | n | NDCG@10 | Recall@20 | coverage@10 |", "|---|---:|---:|---:|---:|"]  # fmt: skip
        rows = sorted(d["methods"].items(), key=lambda kv: (kv[0] != MODEL, -kv[1]["ndcg@10"]["mean"]))
        for m, v in rows:
            cells = [f"{v[k]['mean']:.4f} ± {v[k]['sd']:.4f}" if v[k]["n"] > 1 else f"{v[k]['mean']:.4f}"
                     for k in METRICS]  # fmt: skip
            lines.append(f"| {'**model**' if m == MODEL else m} | {v[METRICS[0]]['n']} | " + " | ".join(cells) + " |")
        r = d.get("model_ratios")
        if r:
            parts = [f"{LABELS[k]} {v['ratio']:.3f}× {v['best']}" for k, v in r.items() if isinstance(v, dict)]
            if r.get("coverage_vs_ease") is not None:
                parts.append(f"coverage@10 {r['coverage_vs_ease']:.3f}× ease")
            lines += ["", "model / best baseline: " + "; ".join(parts)]
        g = d.get("gate")
        if g:
            passed = (f"nightly gate (validation NDCG@10 >= {MIN_MODEL_RATIO}x popularity's): passed in "
                      f"{g['passed']} of {g['runs']} training runs, lowest ratio {g['lowest_ratio']:.2f}")  # fmt: skip
            lines += ["", passed]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--out", type=Path, required=False, help="results directory (outside the repository)")
    parser.add_argument("--seeds", default=",".join(map(str, DEFAULT_SEEDS)), help="training seeds (default 1,2,3)")
    parser.add_argument("--datasets", default="", help="comma list (default: all; see --list)")
    parser.add_argument("--methods", default=",".join(DEFAULT_QUALITY_METHODS),
                        help=f"comma list (default {','.join(DEFAULT_QUALITY_METHODS)}; known: {','.join(DEFAULT_METHODS)})")
    parser.add_argument("--mls", type=Path, default=ROOT.parent / "shared" / "data" / "ml-latest-small",
                        help="the ml-latest-small directory (default ../shared/data/ml-latest-small)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    parser.add_argument("--list", action="store_true", help="print the datasets and exit")
    args = parser.parse_args(argv)
    if args.list:
        for d in DATASETS.values():
            print(f"{d.name:30s} {d.about}")
        return 0
    if args.out is None:
        parser.error("--out is required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%Y-%m-%dT%H:%M:%S")  # fmt: skip
    out = args.out.resolve()
    if out.is_relative_to(ROOT):
        parser.error(f"--out {out} is inside the repository: the drops (real MovieLens data among them) must stay out")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    methods = list(dict.fromkeys(m.strip() for m in args.methods.split(",") if m.strip()))
    unknown = [m for m in methods if m not in DEFAULT_METHODS]
    names = [n.strip() for n in args.datasets.split(",") if n.strip()] or list(DATASETS)
    bad = [n for n in names if n not in DATASETS]
    if unknown or bad or not seeds:
        parser.error(f"unknown methods {unknown} / datasets {bad} (see --list), or no seed")
    if any(DATASETS[n].kind != "generated" for n in names) and not (args.mls / "ratings.csv").exists():
        parser.error(f"--mls {args.mls}: no ratings.csv")
    os.environ.setdefault("PYSPARK_SUBMIT_ARGS", "--conf spark.ui.showConsoleProgress=false pyspark-shell")
    out.mkdir(parents=True, exist_ok=True)
    command = "bench/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])

    sessions = []

    def spark_of():
        if not sessions:
            from recsys_core.spark.session import get_spark

            spark = get_spark("recsys-quality")
            spark.conf.set("spark.sql.shuffle.partitions", str(max(4, 2 * spark.sparkContext.defaultParallelism)))
            sessions.append(spark)
        return sessions[0]

    started = time.monotonic()
    try:
        for i, name in enumerate(names, 1):
            ds = DATASETS[name]
            log.info("[quality] dataset %d/%d %s (%s), %.0fs so far", i, len(names), name, ds.about,
                     time.monotonic() - started)  # fmt: skip
            data_dir = prepare(ds, args.mls, out / "work" / "data")
            run_dataset(ds, data_dir, out, seeds, methods, spark_of, args.device)
    finally:
        for spark in sessions:
            spark.stop()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()  # fmt: skip
    report = {"date": datetime.now(UTC).strftime("%Y-%m-%d"), "command": command, "commit": commit,
              "seeds": seeds, "methods": methods,
              "datasets": {n: aggregate(DATASETS[n], load_runs(out / "runs" / n), methods, seeds) for n in names}}  # fmt: skip
    (out / "quality.json").write_text(json.dumps(report, indent=1))
    text = render(report)
    (out / "quality.md").write_text(text)
    print(text)
    log.info("[quality] %s and quality.json written in %.0fs", out / "quality.md", time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
