"""Shared plumbing of the jobs/ entry points: logging and exit codes, nothing else."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from recsys_core.errors import ConfigError, InputError
from recsys_core.logging_setup import configure_logging

EXIT_BAD_INPUT = 2


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run ``main``; a user-actionable error prints one clear line and exits 2."""
    configure_logging()
    try:
        return main(argv)
    except (InputError, ConfigError) as exc:
        logging.getLogger("job").error("%s", exc)
        print(f"ERROR: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
