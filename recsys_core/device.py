"""Where torch runs: CUDA when present (bf16 autocast), the CPU otherwise.

Training and scoring both call ``select_device`` and run their forward passes under
``autocast``, so the two pick the device and the precision the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch

from recsys_core.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def select_device(requested: str = "auto") -> tuple[torch.device, bool]:
    """(device, use bf16 autocast) for ``requested`` in ``DEVICES``: auto = CUDA when present.

    Raises ConfigError for an unknown name, or for ``cuda`` when torch sees no CUDA device.
    """
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device")
    if requested not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {requested!r}")
    device = torch.device(requested)
    return device, device.type == "cuda" and torch.cuda.is_bf16_supported()


def autocast(device: torch.device, bf16: bool) -> AbstractContextManager:
    """bf16 autocast on ``device`` when ``bf16``, else a no-op context."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads of the calling thread set to ``count`` inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
