"""The thread count of numpy's bundled OpenBLAS, set for a block of code.

The fast scorer multiplies on the calling thread while a helper thread builds the next
chunk's inputs (``recsys_core.scoring.score.BatchScorer``). OpenBLAS's own worker threads
spin on the helper's core between products: measured with the machine loaded, 1.8 s per
2,048 users with two OpenBLAS threads against 1.06 s with one (CPU time 1.23 s against
0.75 s). numpy has no call for it; threadpoolctl does this through the same C entry points
but is not a dependency of the project, so the library is looked up here (numpy's wheels
ship it under ``numpy.libs``). Where it is not found (another BLAS) nothing changes.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import numpy as np

# (set, get) entry points of the OpenBLAS builds numpy ships: scipy-openblas (numpy >= 2), plain
_ENTRY_POINTS = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)


@cache
def _openblas() -> tuple[ctypes._CFuncPtr, ctypes._CFuncPtr] | None:
    """(set, get) of the OpenBLAS that numpy loaded, or None."""
    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for path in sorted(libs.glob("*openblas*")):
        try:
            lib = ctypes.CDLL(str(path))  # already loaded by numpy: the same library
        except OSError:
            continue
        for set_name, get_name in _ENTRY_POINTS:
            if hasattr(lib, set_name) and hasattr(lib, get_name):
                return getattr(lib, set_name), getattr(lib, get_name)
    return None


@contextmanager
def openblas_threads(count: int) -> Iterator[None]:
    """numpy's OpenBLAS runs on ``count`` threads inside the block (no-op without one)."""
    calls = _openblas()
    if calls is None:
        yield
        return
    set_threads, get_threads = calls
    before = int(get_threads())
    set_threads(ctypes.c_int(count))
    try:
        yield
    finally:
        set_threads(ctypes.c_int(before))
