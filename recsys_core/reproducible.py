"""Bit-reproducible CPU numerics: pin Intel MKL's conditional numerical reproducibility.

torch's CPU matrix products go through MKL, which by default may pick a different code
path per call depending on how the operands happen to be aligned in memory. The result
differs in the last bits, and over a few hundred optimizer steps that grows into
different weights: the same features trained twice gave two model versions (about one
run in six on this project's DAG test data). ``MKL_CBWR=AUTO,STRICT`` keeps the fastest
instruction set of the machine but makes the result independent of alignment, for a
fixed thread count (measured: no visible cost on the user-AE step shapes).

MKL reads the variable when it initializes, so it must be set before torch first runs a
matrix product; ``recsys_core/__init__.py`` calls :func:`pin_mkl_numerics` on import.
A value the operator set already wins.
"""

from __future__ import annotations

import os

MKL_CBWR = "AUTO,STRICT"


def pin_mkl_numerics() -> str:
    """Set ``MKL_CBWR`` unless it is set; returns the value in effect."""
    return os.environ.setdefault("MKL_CBWR", MKL_CBWR)
