"""The ``recsys`` console script: small commands a data person runs by hand."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _generate(args: argparse.Namespace) -> int:
    from recsys_core.data.generator import generate

    shape = generate(args.out, scale=args.scale, seed=args.seed, genome_tags=args.genome_tags)
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
    gen.set_defaults(func=_generate)
    show = sub.add_parser("show", help="print a few users' published recommendations with titles")
    show.add_argument("--warehouse", required=True, help="warehouse root (directory or URI)")
    show.add_argument("--ds", required=True, help="logical date YYYY-MM-DD of the partition")
    show.add_argument("--user", type=int, action="append", help="a user id (repeatable); default: the first ones")
    show.add_argument("--users", type=int, default=3, help="how many users when --user is not given (default 3)")
    show.add_argument("--top", type=int, default=5, help="films per user (default 5)")
    show.set_defaults(func=_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    from recsys_core.entrypoint import run_main

    def command(argv: list[str] | None) -> int:
        args = build_parser().parse_args(argv)
        return args.func(args)

    return run_main(command, argv)


if __name__ == "__main__":
    sys.exit(main())
