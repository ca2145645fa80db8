"""Shared plumbing of the jobs/ entry points: arguments, the warehouse lock, exit codes.

A job's failure the user can act on is one ``ERROR:`` line on stderr naming the file,
column, parameter or lock holder, and a non-zero exit:

- 2 (``EXIT_BAD_INPUT``): the input or a parameter is unusable (``InputError``,
  ``ConfigError``, ``CorruptFile``, a bad command line through ``JobArgumentParser``, and
  a pyarrow error from a damaged Parquet file anywhere, whose message names the file);
- 75 (``EXIT_BUSY``, EX_TEMPFAIL): another job holds the warehouse's writer lock
  (``WarehouseBusy``); re-running later succeeds.

Anything else is a bug and keeps its traceback (exit 1).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from recsys_core.errors import ConfigError, CorruptFile, InputError, WarehouseBusy
from recsys_core.logging_setup import configure_logging

EXIT_BAD_INPUT = 2
EXIT_BUSY = 75


class JobArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are a ``ConfigError`` (one ``ERROR:`` line, exit 2)."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message: str):
        raise ConfigError(message)


def whole(text: str) -> int:
    """An integer argument; an integral number written as a float (``10.0``) is accepted."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}")
    return int(value)


def number(text: str) -> float:
    """A finite float argument (``nan`` and ``inf`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


@contextmanager
def locked(warehouse: str, job: str, ds: str | None = None) -> Iterator[None]:
    """Hold the warehouse's writer lock (``recsys_core.lock``) around a job's work."""
    from recsys_core.dates import parse_ds
    from recsys_core.lock import warehouse_lock

    if ds is not None:
        parse_ds(ds)  # a malformed --ds fails before anything is created in the warehouse
    with warehouse_lock(warehouse, job=job, ds=ds):
        yield


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run ``main``; a user-actionable error prints one clear ``ERROR:`` line and exits non-zero."""
    configure_logging()
    try:
        return main(argv)
    except (InputError, ConfigError) as exc:
        return _fail(exc, EXIT_BAD_INPUT)
    except WarehouseBusy as exc:
        return _fail(exc, EXIT_BUSY)
    except (ValueError, OSError) as exc:
        if not _damaged_parquet(exc):
            raise
        logging.getLogger("job").debug("reading a parquet file failed", exc_info=True)
        first = str(exc).strip().splitlines()[0]
        return _fail(CorruptFile(f"unreadable parquet ({first}): re-run the job that writes it"), EXIT_BAD_INPUT)


def _damaged_parquet(exc: BaseException) -> bool:
    """A pyarrow error from reading a damaged Parquet file (its message names the file)."""
    return type(exc).__module__.startswith("pyarrow") and "parquet" in str(exc).lower()


def _fail(exc: BaseException, code: int) -> int:
    logging.getLogger("job").error("%s", exc)
    print(f"ERROR: {exc}", file=sys.stderr)
    return code
