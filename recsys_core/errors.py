"""Errors a user can act on. Entry points print their message and exit non-zero."""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager


class InputError(Exception):
    """The input drop is unusable: a file, column or too many rows are bad. Names which."""


class ConfigError(ValueError):
    """A parameter is out of range or malformed. Names the parameter."""


class CorruptFile(InputError):
    """A file the job reads is truncated or not what it should be. Names the file."""


class WarehouseBusy(Exception):
    """Another job holds the warehouse's writer lock (``recsys_core.lock``). Names the holder."""


# What reading a damaged file raises: pyarrow (ArrowInvalid is a ValueError, ArrowIOError
# an OSError), json, torch.load (zip/pickle errors, RuntimeError, ValueError, EOFError).
_DAMAGED = (ValueError, OSError, EOFError, RuntimeError, KeyError, IndexError, TypeError,
            zipfile.BadZipFile, pickle.UnpicklingError, json.JSONDecodeError)  # fmt: skip


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


@contextmanager
def reading(path: str, what: str, fix: str) -> Iterator[None]:
    """Turn an exception from reading ``path`` into one ``CorruptFile`` line naming it.

    ``what`` says what the file is ("model checkpoint"), ``fix`` what to do ("re-run the
    train job for ds=…"). A missing file and errors the job already explains pass through.
    """
    try:
        yield
    except (FileNotFoundError, InputError, ConfigError):
        raise
    except _DAMAGED as exc:
        raise CorruptFile(f"{path}: unreadable {what} ({_first_line(exc)}): {fix}") from exc
