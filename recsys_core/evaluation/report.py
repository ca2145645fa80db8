"""The evaluation report: ``report.md`` and ``report.html`` beside PNG plots.

Both documents hold the same content: split statistics, one table of every method x
metric (the best value of each quality metric in bold), wall times, chosen parameters, and
the plots (metrics per method, the user AE's training curves, recall by user activity,
popularity bias). The HTML is self-contained apart from the PNGs, which it links by
relative path, so the report directory can be moved or served as is.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: render to files only
import matplotlib.pyplot as plt

from recsys_core.evaluation.model_summary import item_item_sentence

# metric -> (column title, higher is better?); None: no "best" (a property, not a quality)
TABLE_METRICS: dict[str, tuple[str, bool | None]] = {
    "ndcg@10": ("NDCG@10", True),
    "recall@20": ("Recall@20", True),
    "ndcg@100": ("NDCG@100", True),
    "recall@50": ("Recall@50", True),
    "precision@10": ("P@10", True),
    "map@10": ("MAP@10", True),
    "hitrate@10": ("HR@10", True),
    "user_coverage": ("user cov.", True),
    "catalog_coverage@10": ("catalog cov.@10", True),
    "popularity_pct@10": ("pop. pct@10", None),
    "seen_leakage": ("seen leakage", None),
}
BAR_METRICS = ("ndcg@10", "recall@20", "ndcg@100", "recall@50", "map@10", "hitrate@10")
PLOTS = {
    "metrics": "metrics.png",
    "training": "training_curves.png",
    "activity": "recall_by_activity.png",
    "popularity": "popularity_bias.png",
}


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, int | bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _best(results: dict) -> dict[str, float]:
    best: dict[str, float] = {}
    for metric, (_, higher) in TABLE_METRICS.items():
        if higher is None:
            continue
        values = [m["metrics"].get(metric) for m in results["methods"].values()]
        values = [v for v in values if v is not None and not math.isnan(v)]
        if values:
            best[metric] = max(values) if higher else min(values)
    return best


# ---------------------------------------------------------------- tables (rows of cells)


def metrics_table(results: dict) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """(header, rows of (text, bold)) of the method x metric table."""
    best = _best(results)
    header = ["method", *(title for title, _ in TABLE_METRICS.values())]
    rows = []
    for info in results["methods"].values():
        row = [(info["label"], False)]
        for metric in TABLE_METRICS:
            value = info["metrics"].get(metric)
            bold = metric in best and value is not None and math.isclose(value, best[metric], rel_tol=1e-9)
            row.append((_fmt(value), bold))
        rows.append(row)
    return header, rows


def timing_table(results: dict) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    header = ["method", "tune s", "fit s", "recommend s", "fit + recommend s", "parameters"]
    rows = []
    for name, info in results["methods"].items():
        s = info.get("seconds", {})
        params = info.get("params", {})
        if name == "model":
            cfg = params.get("train_config", {})
            user = cfg.get("user", {})
            shown = (f"lr {cfg.get('lr')}, epochs ≤{cfg.get('max_epochs')}, patience {cfg.get('patience_steps')} steps, "
                     f"dropout {user.get('input_dropout')}, dims {user.get('hidden_dim')}/{user.get('embedding_dim')}, "
                     f"item-item k {user.get('item_neighbours')} (its settings: the training section); "
                     f"prep (Spark ingest + features) {_fmt(s.get('prep'), 1)} s")  # fmt: skip
        else:
            shown = ", ".join(f"{k}={v}" for k, v in params.items()) or "–"
        rows.append([(info["label"], False), (_fmt(s.get("tune"), 1), False), (_fmt(s.get("fit"), 1), False),
                     (_fmt(s.get("recommend"), 1), False), (_fmt(s.get("total"), 1), False), (shown, False)])  # fmt: skip
    return header, rows


def split_table(results: dict) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    s = results["split"]
    items = [
        ("ratings (valid, after re-rating dedup)", f"{s['ratings']:,}"),
        ("users / films", f"{s['users']:,} / {s['films']:,}"),
        ("time span", f"{s['first_rating'][:10]} … {s['last_rating'][:10]}"),
        ("holdout rule", (f"users with ≥ {s['min_ratings']} ratings: last max(1, floor({s['fraction']}·n)) "
                          "by (timestamp, movieId)")),
        ("training ratings / films", f"{s['train_ratings']:,} / {s['train_films']:,}"),
        ("held-out ratings / users", f"{s['heldout_ratings']:,} / {s['heldout_users']:,}"),
        (f"relevant held-out ratings (≥ {s['relevant_rating']})", f"{s['relevant_heldout_ratings']:,}"),
        ("evaluated users (≥ 1 relevant held-out film)", f"{s['evaluated_users']:,}"),
        ("held-out ratings of films unseen in training", f"{s['heldout_films_not_in_train']:,}"),
        ("tags dropped (on held-out pairs)", f"{s['tags_dropped']:,} of {s['tags_read']:,}"),
        ("unreadable rows passed to ingest / re-ratings dropped",
         f"{s['unreadable_rows_passed_to_ingest']:,} / {s['duplicate_ratings_dropped']:,}"),
        ("logical date of the training run (ds)", results["ds"]),
        ("catalog (films with a training rating)", f"{results['catalog_films']:,}"),
    ]  # fmt: skip
    return ["", "value"], [[(k, False), (v, False)] for k, v in items]


def activity_table(results: dict) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    act = results["activity"]
    header = ["method", *(f"{label} ({n})" for label, n in zip(act["labels"], act["users"], strict=True))]
    rows = []
    for name, values in act["methods"].items():
        col_best = []
        for b, v in enumerate(values):
            others = [m[b] for m in act["methods"].values() if m[b] is not None]
            col_best.append(v is not None and others and math.isclose(v, max(others), rel_tol=1e-9))
        label = results["methods"][name]["label"]
        rows.append([(label, False), *((_fmt(v), bool(bb)) for v, bb in zip(values, col_best, strict=True))])
    return header, rows


def _md_table(header: list[str], rows: list[list[tuple[str, bool]]]) -> str:
    def cell(text: str, bold: bool) -> str:
        text = text.replace("|", "\\|")
        return f"**{text}**" if bold else text

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(t, b) for t, b in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[tuple[str, bool]]]) -> str:
    def cell(text: str, bold: bool) -> str:
        text = html.escape(text)
        return f"<td><b>{text}</b></td>" if bold else f"<td>{text}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(cell(t, b) for t, b in row) + "</tr>" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


# ---------------------------------------------------------------- plots


def _labels(results: dict) -> list[str]:
    return [info["label"] for info in results["methods"].values()]


def _colors(n: int) -> list:
    """``n`` distinct colours: the default cycle up to 10 methods, tab20 above (no repeats)."""
    return [f"C{i}" for i in range(n)] if n <= 10 else [plt.get_cmap("tab20")(i % 20) for i in range(n)]


def _grouped_bars(ax, series: list[tuple[str, list[float]]], tick_labels: list[str]) -> None:
    """One bar per (label, values) series side by side at each tick, with a legend."""
    width = 0.8 / max(len(series), 1)
    colors = _colors(len(series))
    for i, (label, values) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(tick_labels))]
        ax.bar(xs, values, width, label=label, color=colors[i])
    ax.set_xticks(range(len(tick_labels)), tick_labels)
    ax.legend(fontsize=8, ncol=2 if len(series) <= 6 else 3)
    ax.grid(axis="y", alpha=0.3)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_metrics(results: dict, path: Path) -> None:
    methods = list(results["methods"].values())
    metrics = [m for m in BAR_METRICS if all(m in info["metrics"] for info in methods)]
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(metrics), 0.2 * len(metrics) * len(methods)), 4.5))
    series = [(info["label"], [info["metrics"][m] for m in metrics]) for info in methods]
    _grouped_bars(ax, series, [TABLE_METRICS[m][0] for m in metrics])
    ax.set_ylabel("mean over evaluated users")
    ax.set_title("Top-N quality per method (held-out ratings ≥ relevant threshold)")
    _save(fig, path)


def plot_training(results: dict, path: Path) -> bool:
    """The user AE's per-epoch loss and validation metrics (from the model manifest)."""
    model = results.get("model") or {}
    history = model.get("history") or []
    if not history:
        return False
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(epochs, [h["loss"] for h in history], marker="o", ms=3)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss (multinomial NLL)")
    ax1.set_title("User AE: training loss")
    for key, color in (("ndcg@10", "C0"), ("recall@20", "C1"), ("ndcg@100", "C2")):
        if key in history[0]:
            ax2.plot(epochs, [h[key] for h in history], marker="o", ms=3, color=color, label=f"model {key}")
            pop = (model.get("metrics") or {}).get("popularity", {}).get(key)
            if pop is not None:
                ax2.axhline(pop, color=color, ls="--", lw=1, label=f"popularity {key}")
    best = model.get("best_epoch")
    if best:
        ax2.axvline(best, color="grey", ls=":", lw=1, label=f"best epoch {best}")
    ax2.set_xlabel("epoch")
    ax2.set_title("User AE: internal validation (training part)")
    ax2.legend(fontsize=7)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    _save(fig, path)
    return True


def plot_activity(results: dict, path: Path) -> None:
    act = results["activity"]
    labels = [f"{lab}\n({n} users)" for lab, n in zip(act["labels"], act["users"], strict=True)]
    keep = [i for i, n in enumerate(act["users"]) if n > 0]
    fig, ax = plt.subplots(figsize=(max(8, 1.5 * len(keep)), 4.5))
    series = [(results["methods"][name]["label"], [values[b] or 0.0 for b in keep])
              for name, values in act["methods"].items()]  # fmt: skip
    _grouped_bars(ax, series, [labels[b] for b in keep])
    ax.set_xlabel("user's number of training ratings")
    ax.set_ylabel("Recall@20")
    ax.set_title("Recall@20 by user activity")
    _save(fig, path)


def plot_popularity(results: dict, path: Path) -> None:
    methods = list(results["methods"].values())
    labels = _labels(results)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, max(4.5, 1.5 + 0.35 * len(methods))))
    pct = [100 * (info["metrics"].get("popularity_pct@10") or 0.0) for info in methods]
    ax1.barh(labels, pct, color="C3")
    colors = _colors(len(methods))
    ax1.set_xlabel("mean popularity percentile of the top-10 films (100 = most rated)")
    ax1.set_title("Popularity bias")
    ax1.set_xlim(max(0.0, min(pct, default=0.0) - 10.0), 100)  # the interesting range is near the top
    ax1.invert_yaxis()
    for i, info in enumerate(methods):
        point = (100 * (info["metrics"].get("catalog_coverage@10") or 0.0), info["metrics"]["ndcg@10"])
        ax2.scatter(*point, s=40, color=colors[i])
        ax2.annotate(labels[i], point, fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax2.set_xlabel("catalog coverage of the top-10 lists (%)")
    ax2.set_ylabel("NDCG@10")
    ax2.set_title("Accuracy vs. catalog coverage")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    _save(fig, path)


# ---------------------------------------------------------------- documents


def _sections(results: dict, have_training: bool) -> list[tuple[str, str, object]]:
    """(kind, title/text, payload) blocks shared by the Markdown and HTML renderers."""
    s = results["split"]
    model = results.get("model") or {}
    blocks: list[tuple[str, str, object]] = [
        ("h1", "Offline evaluation", None),
        ("p", (f"Data: `{results['data_dir']}` · seed {results['seed']} · top-{results['top_n']} lists · "
              f"total wall time {results['timings']['total']:.0f} s."), None),
        ("p", (f"Temporal per-user holdout: for every user with ≥ {s['min_ratings']} ratings the last "
              f"max(1, floor({s['fraction']}·n)) ratings by (timestamp, movieId) are held out; held-out "
              f"ratings ≥ {s['relevant_rating']} are relevant. Every method is fitted on the same training "
              "part and must not recommend films the user rated there. Ranking metrics are means over the "
              "evaluated users; Recall@K and NDCG@K are normalized by min(K, relevant)."), None),
        ("h2", "Split", None),
        ("table", "", split_table(results)),
        ("h2", "Results", None),
        ("table", "", metrics_table(results)),
        ("p", ("Best of each quality metric in bold. *pop. pct@10*: mean popularity percentile of the "
              "recommended top-10 films among the catalog (100 = the most rated film; lower = less "
              "popularity bias). *seen leakage*: recommended films the user had rated in training (must "
              "be 0)."), None),
        ("img", "Metrics per method", PLOTS["metrics"]),
        ("h2", "Wall time and parameters", None),
        ("table", "", timing_table(results)),
        ("p", ("Baselines: tuned by NDCG@10 on an inner temporal split of the training part (same rule), "
              "then fitted on the whole training part; *tune* includes every grid fit. The model: *fit* "
              "= `run_training` (film AE, user AE with early stopping, item-item term), *recommend* = `run_scoring` "
              f"(every user). Split {results['timings'].get('split', 0):.1f} s, Spark prep "
              f"{results['timings'].get('prep', 0):.1f} s. EDLAE / DLAE: EASE's closed form with the dropout "
              "penalty λ + p/(1−p)·diag(XᵀX), with / without the zero diagonal (Steck 2020); *recency-weighted*: "
              "each user's input row weighted 0.5^(age / half_life), age counted back from the user's latest "
              "rating (half_life = inf: none); *recent popularity*: likes in the last window_days before the "
              "training part's last rating."), None),
    ]  # fmt: skip
    if have_training:
        blocks += [
            ("h2", "User AE training", None),
            ("p", (f"Best epoch {model.get('best_epoch')} of {model.get('epochs_run')} run "
                  f"(batch {model.get('batch_size')}, device {model.get('device')}); the curves are the "
                  "training loop's own validation on a holdout of the training part."), None),
            ("img", "User AE training curves", PLOTS["training"]),
        ]  # fmt: skip
        item = model.get("item_item")
        if item:
            blocks.append(("p", item_item_sentence(item), None))
    blocks += [
        ("h2", "Recall@20 by user activity", None),
        ("table", "", activity_table(results)),
        ("img", "Recall@20 by user activity", PLOTS["activity"]),
        ("h2", "Popularity bias", None),
        ("img", "Popularity bias", PLOTS["popularity"]),
    ]
    grids = [(info["label"], info["grid"]) for info in results["methods"].values() if info.get("grid")]
    if grids:
        blocks.append(("h2", "Tuning grids (inner split)", None))
        for label, grid in grids:
            keys = list(grid[0])
            rows = [[(_fmt(g.get(k)), False) for k in keys] for g in grid]
            blocks += [("h3", label, None), ("table", "", (keys, rows))]
    return blocks


def _render_md(blocks) -> str:
    out = []
    for kind, text, payload in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + text)
        elif kind == "p":
            out.append(text)
        elif kind == "table":
            out.append(_md_table(*payload))
        elif kind == "img":
            out.append(f"![{text}]({payload})")
    return "\n\n".join(out) + "\n"


def _inline_md(text: str) -> str:
    """Escape, then the two inline marks the report uses: `code` and *emphasis*."""
    import re

    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", text)


STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:1em 0}
code{background:#f3f3f3;padding:0 3px}"""


def _render_html(blocks) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>Offline evaluation</title>", f"<style>{STYLE}</style></head><body>"]  # fmt: skip
    for kind, text, payload in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{html.escape(text)}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline_md(text)}</p>")
        elif kind == "table":
            out.append(_html_table(*payload))
        elif kind == "img":
            out.append(f'<img src="{html.escape(payload)}" alt="{html.escape(text)}">')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(out_dir: str | Path, results: dict) -> dict:
    """Write the plots, ``report.md`` and ``report.html``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_metrics(results, out / PLOTS["metrics"])
    have_training = plot_training(results, out / PLOTS["training"])
    plot_activity(results, out / PLOTS["activity"])
    plot_popularity(results, out / PLOTS["popularity"])
    blocks = _sections(results, have_training)
    (out / "report.md").write_text(_render_md(blocks), encoding="utf-8")
    (out / "report.html").write_text(_render_html(blocks), encoding="utf-8")
    images = [PLOTS[k] for k in ("metrics", "activity", "popularity")] + (
        [PLOTS["training"]] if have_training else []
    )
    return {"markdown": str(out / "report.md"), "html": str(out / "report.html"),
            "images": [str(out / name) for name in images]}  # fmt: skip
