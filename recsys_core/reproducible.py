"""Bit-identical CPU training: warm up torch's MKL-backed math kernels before any real work.

torch computes ``tanh``, ``exp``, ``log`` and other elementwise functions on CPU through
Intel MKL's vector math library, which picks its CPU-specific code the first time a
function is called. When that first call already runs on several threads (a tensor big
enough for torch to split), some processes got a slightly different result from that one
call (measured: the film AE's first ``tanh`` differed in about one process in ten, and
the weights after training differed with it). Later calls in the process are stable.
Calling each function once on a tiny tensor, which torch runs on one thread, settles the
choice before training or scoring starts; with it, 90 fresh processes gave the same bits.
"""

from __future__ import annotations

import torch

# torch's CPU kernels that call MKL's vector math functions (aten/src/ATen/cpu/vml.h)
# plus the composites this project uses that are built on them
_UNARY = (
    torch.tanh, torch.exp, torch.expm1, torch.log, torch.log10, torch.log1p, torch.log2, torch.sqrt,
    torch.rsqrt, torch.sigmoid, torch.sin, torch.cos, torch.tan, torch.asin, torch.acos, torch.atan,
    torch.sinh, torch.cosh, torch.erf, torch.erfc, torch.erfinv, torch.lgamma, torch.trunc,
    torch.nn.functional.softplus, torch.nn.functional.logsigmoid,
)  # fmt: skip

_done = False


def warm_up_cpu_math() -> None:
    """Call every MKL-backed elementwise function once, single-threaded (idempotent)."""
    global _done
    if _done:
        return
    for dtype in (torch.float32, torch.float64):
        x = torch.linspace(0.1, 0.9, 16, dtype=dtype)
        for fn in _UNARY:
            fn(x)
        torch.logsumexp(x.reshape(4, 4), dim=1)
        torch.log_softmax(x.reshape(4, 4), dim=1)
    _done = True
