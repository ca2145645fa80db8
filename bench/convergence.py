"""The nightly training against the same training without a time budget (issue 15, item 2).

    .venv/bin/python bench/convergence.py --warehouse DIR/dag-warehouse-1.0-42 \\
        --converged DIR/converged-1.0-42 [--ds 2018-09-30] [--reuse]

The bar asks that the model the nightly chain publishes (``jobs/train.py`` with the DAG's
10-minute cap) reach within 1% of the validation NDCG@10 that the same model reaches when
trained to convergence: every point of the item-item search, user-AE epochs until early
stopping (or ``--epochs``), no time cap. This copies ``features/ds=…`` of the nightly
warehouse into ``--converged`` (a directory of its own, outside the nightly warehouse: the
script marks it as its own and refuses any other non-empty one, since it replaces the ds's
partitions there; ``--reuse`` keeps a finished run there trained on the same features),
trains there with ``--max-minutes`` of a day and the nightly run's seed and ``--epochs``,
and compares the two manifests: the model's validation NDCG@10 (item-item term blended, as
published), the user AE alone, the item-item search's points, what stopped the AE (a
warning when the reference's stopped at its epoch limit rather than by early stopping) and
the training seconds. ``bench/dag.py --converged`` runs
it after the chain.

Writes ``CONVERGED/convergence.png``: the user AE's validation NDCG@10 per epoch against
its training seconds in both runs, with each run's published model as a dashed line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from prep import BIN, measure

from recsys_core.defaults import RUN_PARAMS
from recsys_core.paths import Warehouse

UNBUDGETED_MINUTES = 24 * 60.0  # "no time budget": a day, far beyond any run's end
BAR = 0.99  # the nightly model's NDCG@10 at least this x the converged one's
MARKER = ".bench-convergence"  # marks a --converged directory as this script's (it empties it)


def manifest_path(wh: Path, ds: str) -> Path:
    return Path(f"{Warehouse(str(wh)).models(ds)}/manifest.json")


def manifest(wh: Path, ds: str) -> dict:
    """The models manifest of ``wh`` for ``ds``; SystemExit naming the path when there is none."""
    path = manifest_path(wh, ds)
    if not path.is_file():
        raise SystemExit(f"{path}: no trained model (run the chain, or jobs/train.py, for ds={ds} first)")
    return json.loads(path.read_text())


def check_paths(nightly: Path, converged: Path) -> None:
    """SystemExit unless ``converged`` lies outside the nightly warehouse and holds nothing
    but (at most) an earlier run of this script: it is emptied before training."""
    a, b = nightly.resolve(), converged.resolve()
    if a == b or a in b.parents or b in a.parents:
        raise SystemExit(f"--converged {converged} and the nightly warehouse {nightly} overlap: give the "
                         f"unbudgeted run a directory of its own")  # fmt: skip
    if b.is_dir() and any(b.iterdir()) and not (b / MARKER).exists():
        raise SystemExit(f"--converged {converged} exists and is not a directory of bench/convergence.py "
                         f"(no {MARKER}): not deleting it; remove it or choose another")  # fmt: skip


def reusable(converged: Path, ds: str, nightly_manifest: dict) -> bool:
    """A finished unbudgeted run for ``ds`` trained on the same features as the nightly one."""
    path = manifest_path(converged, ds)
    if not path.is_file():
        return False
    same = json.loads(path.read_text()).get("vocabulary") == nightly_manifest.get("vocabulary")
    if not same:
        print(f"{path}: trained on other features than the nightly model: training again")
    return same


def train_unbudgeted(nightly: Path, converged: Path, ds: str, env: dict[str, str], reuse: bool,
                     nightly_manifest: dict) -> dict:  # fmt: skip
    """Train without a time budget on the nightly run's features; returns {wall_s, peak_gib}
    (empty when ``reuse`` found a finished run on the same features)."""
    check_paths(nightly, converged)
    if reuse and reusable(converged, ds, nightly_manifest):
        return {}
    source, target = Warehouse(str(nightly)).features(ds), Warehouse(str(converged)).features(ds)
    if not Path(source).is_dir():
        raise SystemExit(f"{source}: no features to train on (run the chain for ds={ds} first)")
    wh = Warehouse(str(converged))
    for partition in (wh.features(ds), wh.models(ds), wh.embeddings(ds)):  # this ds only
        shutil.rmtree(partition, ignore_errors=True)
    converged.mkdir(parents=True, exist_ok=True)
    (converged / MARKER).touch()
    shutil.copytree(source, target)
    config = nightly_manifest.get("config", {})  # the nightly run's own seed and epoch limit
    epochs, seed = config.get("max_epochs", RUN_PARAMS["max_epochs"].default), config.get("seed", RUN_PARAMS["seed"].default)
    cmd = [str(BIN / "python"), "jobs/train.py", "--warehouse", str(converged), "--ds", ds, "--epochs", str(epochs),
           "--max-minutes", str(UNBUDGETED_MINUTES), "--seed", str(seed)]  # fmt: skip
    wall, peak = measure("train without a time budget", cmd, env)
    return {"wall_s": round(wall, 1), "peak_gib": round(peak, 2)}


def summary(m: dict) -> dict:
    """What the comparison reads from one models manifest."""
    search = m["item_item"].get("search", {})
    return {
        "model": m["metrics"]["model"]["ndcg@10"],
        "autoencoder": m["metrics"]["autoencoder"]["ndcg@10"],
        "search_points": len(search.get("tried", [])),
        "search_seconds": search.get("seconds"),
        "best_epoch": m.get("best_epoch"),
        "epochs_run": m.get("epochs_run"),
        "stopped_by": m.get("stopped_by", "not recorded"),  # what ended the user AE's epochs (older manifests: none)
        "max_minutes": m["config"]["max_minutes"],
        "train_seconds": m.get("wall_seconds"),
        "item_item": {k: m["item_item"].get(k) for k in ("feedback", "l2", "dropout", "blend", "half_life")},
        "history": [(h["seconds"], h.get("ndcg@10")) for h in m.get("history", [])],
    }


def compare(nightly: dict, converged: dict) -> dict:
    """The nightly model's NDCG@10 as a share of the converged one's, and whether it meets the bar."""
    ratio = nightly["model"] / max(converged["model"], 1e-12)
    return {"ratio": round(ratio, 4), "bar": BAR, "within_1pct": ratio >= BAR}


def label(s: dict) -> str:
    """A run's name: its time cap, or none."""
    return "without a time budget" if s["max_minutes"] >= UNBUDGETED_MINUTES else f"cap {s['max_minutes']:g} min"


def report(nightly: dict, converged: dict, verdict: dict) -> str:
    header = (f"{'training':<26} {'model NDCG@10':>13} {'AE alone':>9} {'search pts':>10} {'AE epochs':>10} "
              f"{'seconds':>8}  AE stopped by")  # fmt: skip
    rows = [header]
    for s in (nightly, converged):
        rows.append(f"{label(s):<26} {s['model']:>13.4f} {s['autoencoder']:>9.4f} {s['search_points']:>10} "
                    f"{s['best_epoch']:>4}/{s['epochs_run']:<5} {s['train_seconds'] or 0:>8.0f}  {s['stopped_by']}")  # fmt: skip
    rows.append(f"nightly / converged: {verdict['ratio']:.4f} (bar >= {BAR}): {verdict['within_1pct']}")
    if converged["stopped_by"] in ("epochs", "time cap"):
        rows.append(f"warning: the reference's user AE was stopped by its {converged['stopped_by']}, not by early "
                    f"stopping (best epoch {converged['best_epoch']} of {converged['epochs_run']}): it may not have "
                    f"converged")  # fmt: skip
    return "\n".join(rows)


def plot(nightly: dict, converged: dict, path: Path) -> None:
    """User-AE validation NDCG@10 per epoch against its cumulative training seconds, both runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for s, colour in zip((nightly, converged), ("tab:blue", "tab:orange")):
        name = label(s)
        seconds, ndcg, total = [], [], 0.0
        for sec, value in s["history"]:
            total += sec
            seconds.append(total)
            ndcg.append(value)
        ax.plot(seconds, ndcg, "o-", color=colour, label=f"{name}: user AE alone")
        ax.axhline(s["model"], color=colour, linestyle="--", label=f"{name}: published model {s['model']:.4f}")
    top = max(nightly["model"], converged["model"])
    ax.set_ylim(top=top + 0.1 * (top - ax.get_ylim()[0]))
    ax.set_xlabel("user-AE training seconds (epochs + their validation)")
    ax.set_ylabel("validation NDCG@10")
    ax.set_title("Convergence: nightly training vs. no time budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(nightly_wh: Path, converged_wh: Path, ds: str, env: dict[str, str], reuse: bool) -> dict:
    """Train (or reuse) the unbudgeted run, compare, print, plot; returns the figures."""
    nightly_wh, converged_wh = nightly_wh.resolve(), converged_wh.resolve()  # training runs from the repo root
    nightly_manifest = manifest(nightly_wh, ds)  # first: fail before hours of training
    nightly = summary(nightly_manifest)
    measured = train_unbudgeted(nightly_wh, converged_wh, ds, env, reuse, nightly_manifest)
    converged = summary(manifest(converged_wh, ds))
    verdict = compare(nightly, converged)
    print(report(nightly, converged, verdict))
    png = converged_wh / "convergence.png"
    plot(nightly, converged, png)
    print(f"curve: {png}")
    return {"nightly": nightly, "converged": converged, **verdict, "measured": measured, "plot": str(png)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--warehouse", type=Path, required=True, help="the nightly run's warehouse")
    parser.add_argument("--converged", type=Path, required=True, help="where to train without a time budget")
    parser.add_argument("--ds", default="2018-09-30")
    parser.add_argument("--reuse", action="store_true", help="keep a finished unbudgeted run")
    args = parser.parse_args()
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    out = run(args.warehouse, args.converged, args.ds, env, args.reuse)
    (args.converged / "convergence.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
