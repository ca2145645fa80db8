"""The ``recsys`` console script: small commands a data person runs by hand."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _generate(args: argparse.Namespace) -> int:
    from recsys_core.data.generator import generate
    from recsys_core.data.synthetic_time import TemporalShape

    temporal = TemporalShape.release_driven() if args.release_driven else (
        TemporalShape.movielens() if args.temporal else None)  # fmt: skip
    shape = generate(args.out, scale=args.scale, seed=args.seed, genome_tags=args.genome_tags, temporal=temporal)
    print(
        f"wrote {shape.ratings:,} ratings by {shape.users:,} users of {shape.films:,} films "
        f"(genome {shape.genome_films:,} films x {shape.genome_tags:,} tags) to {args.out}"
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    from recsys_core.paths import Warehouse
    from recsys_core.show import render_recommendations

    print(render_recommendations(Warehouse(args.warehouse), args.ds, args.user or None, args.users, args.top))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import os

    from recsys_core.evaluation.report import metrics_table
    from recsys_core.evaluation.run import run_evaluation

    # a local Spark session of this process: no console progress bars between the log lines
    os.environ.setdefault("PYSPARK_SUBMIT_ARGS", "--conf spark.ui.showConsoleProgress=false pyspark-shell")

    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    kwargs = {"methods": methods} if methods else {}
    results = run_evaluation(args.data, args.out, seed=args.seed, top_n=args.top_n, device=args.device,
                             work_dir=args.work_dir, **kwargs)  # fmt: skip
    header, rows = metrics_table(results)
    shown = [0, 1, 2, 3, 9, 11]  # method, NDCG@10, Recall@20, NDCG@100, catalog cov., leakage
    width = max(len(header[0]), *(len(row[0][0]) for row in rows))
    print("  ".join(f"{header[i]:>{width}}" if i == 0 else f"{header[i]:>12}" for i in shown))
    for row in rows:
        print("  ".join(f"{row[i][0]:>{width}}" if i == 0 else f"{row[i][0]:>12}" for i in shown))
    print(f"report: {results['report']['html']} (and report.md, metrics.json) in "
          f"{results['timings']['total']:.0f}s")  # fmt: skip
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write a synthetic MovieLens-shaped drop")
    gen.add_argument("--out", type=Path, required=True, help="directory to write the CSVs into")
    gen.add_argument("--scale", type=float, default=0.001,
                     help="1.0 = the full 'latest' release (27.7M ratings); default 0.001")
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--genome-tags", type=int, default=1128,
                     help="genome width (1,128 in real releases; fewer makes small tests fast)")
    time_shape = gen.add_mutually_exclusive_group()
    time_shape.add_argument("--temporal", action="store_true",
                            help="time in the data: films released over the years (ratings start then and decay "
                                 "after), taste that drifts along each user's history (MovieLens-like; default off)")
    time_shape.add_argument("--release-driven", action="store_true",
                            help="like --temporal, but sparse and release-driven: 3x the users, ~6 ratings each "
                                 "(median ~3), most ratings of films out for less than a year")
    gen.set_defaults(func=_generate)
    show = sub.add_parser("show", help="print a few users' published recommendations with titles")
    show.add_argument("--warehouse", required=True, help="warehouse root (directory or URI)")
    show.add_argument("--ds", required=True, help="logical date YYYY-MM-DD of the partition")
    show.add_argument("--user", type=int, action="append", help="a user id (repeatable); default: the first ones")
    show.add_argument("--users", type=int, default=3, help="how many users when --user is not given (default 3)")
    show.add_argument("--top", type=int, default=5, help="films per user (default 5)")
    show.set_defaults(func=_show)
    ev = sub.add_parser("evaluate", help="offline evaluation of the model against baselines, with a report")
    ev.add_argument("--data", required=True, help="a MovieLens-layout directory (ratings.csv, movies.csv, ...)")
    ev.add_argument("--out", required=True, help="report directory (report.md, report.html, PNGs, metrics.json)")
    ev.add_argument("--seed", type=int, default=42)
    ev.add_argument("--top-n", type=int, default=100, help="length of the lists (>= 100; default 100)")
    ev.add_argument("--methods", default="",
                    help="comma list of methods to run, e.g. model,ease,edlae_recency (default: all of them; "
                         "an unknown name is refused with the list of known ones)")
    ev.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                    help="training and scoring device (default: the training default, auto)")
    ev.add_argument("--work-dir", default=None, help="scratch for the split and warehouse (default OUT/work)")
    ev.set_defaults(func=_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    from recsys_core.entrypoint import run_main

    def command(argv: list[str] | None) -> int:
        args = build_parser().parse_args(argv)
        return args.func(args)

    return run_main(command, argv)


if __name__ == "__main__":
    sys.exit(main())
