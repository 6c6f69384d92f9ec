"""Triton kernels for the fast engine's per-step work (GPU; optional).

Importing this package never imports triton; the kernels load on first use. Without triton, or
for an input that is not on a CUDA device, :func:`triton_unavailable` says why and layers fall
back to the fast engine (:mod:`rnnkit.scan.fast`). Under ``TRITON_INTERPRET=1`` an explicit
``backend="triton"`` also runs on CPU tensors (slowly), which is how CI checks the kernels.
"""

from __future__ import annotations

import importlib.util
import os

from torch import Tensor

from rnnkit.cells.base import RecurrentCell, State

__all__ = ["triton_available", "triton_label", "triton_scan", "triton_unavailable"]


#: looked up once, at import (without importing triton): torch.compile will not trace find_spec,
#: and a layer asks on every forward (measured: a graph break under compile on CUDA, torch 2.11)
_INSTALLED = importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    return _INSTALLED


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_unavailable(cells: list[RecurrentCell], x: Tensor, requested: bool = False) -> str | None:
    """Why the Triton kernels cannot run this layer on ``x``, or None if they can."""
    if not triton_available():
        return "triton is not installed (pip install triton)"
    if x.device.type != "cuda" and not (requested and interpreting()):
        return (f"the input is on {x.device.type!r}; the Triton kernels need a CUDA device "
                "(or backend='triton' under TRITON_INTERPRET=1)")
    from rnnkit.scan.triton.scan import layer_unavailable

    return layer_unavailable(cells, x)


def triton_label(cells: list[RecurrentCell], x: Tensor) -> str:
    """How the Triton path runs this layer, for ``explain()``."""
    from rnnkit.scan.triton.scan import describe

    return describe(cells, x)


def triton_scan(cell: RecurrentCell, x_proj: Tensor, state: State, lengths: Tensor | None = None,
                noise: Tensor | None = None, keeps: list | None = None):
    """:func:`rnnkit.scan.fast.fast_scan` with the per-step elementwise work in Triton kernels."""
    from rnnkit.scan.triton.scan import triton_scan as scan

    return scan(cell, x_proj, state, lengths, noise, keeps)
