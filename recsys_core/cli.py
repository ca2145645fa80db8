"""The ``recsys`` console script: small commands a data person runs by hand."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recsys_core.logging_setup import configure_logging


def _generate(args: argparse.Namespace) -> int:
    from recsys_core.data.generator import generate

    shape = generate(args.out, scale=args.scale, seed=args.seed, genome_tags=args.genome_tags)
    print(
        f"wrote {shape.ratings:,} ratings by {shape.users:,} users of {shape.films:,} films "
        f"(genome {shape.genome_films:,} films x {shape.genome_tags:,} tags) to {args.out}"
    )
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
    return parser


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
