"""oneDNN's GEMM with a weight packed for it (``torch.ops.mkldnn._reorder_linear_weight`` and
``_linear_pointwise``, the kernels inductor uses for frozen linears on CPU): on the development
machine (AVX-512, 2 threads) 1.4-4.5x faster than ``torch.mm`` (MKL) for the engine's shapes, both
the per-step recurrent matmuls and the whole-sequence input projections. float32 on a CPU with
oneDNN only (checked once on a small case, :func:`onednn_works`); ``RNNKIT_ONEDNN=0`` switches it
off.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

__all__ = ["linear_rows", "onednn_works", "packed_linear", "packed_weight"]

_WORKS: list[bool] = []  # filled by the first onednn_works()


def onednn_works() -> bool:
    """Whether this torch has oneDNN's packed linear and it computes ``x @ W^T`` (tried once, on a
    small case): a torch without the ops, or one where they fail, keeps ``torch.mm``."""
    if not _WORKS:
        ok = torch.backends.mkldnn.is_available() and os.environ.get("RNNKIT_ONEDNN", "1") != "0"
        if ok:
            try:
                x, w = torch.randn(4, 16), torch.randn(8, 16)
                packed = torch.ops.mkldnn._reorder_linear_weight(w, 4)
                got = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
                ok = bool(torch.allclose(got, x @ w.t(), atol=1e-4, rtol=1e-4))
            except Exception:  # no such op in this torch, or it failed: plain torch.mm
                ok = False
        _WORKS.append(ok)
    return _WORKS[0]


def _packs(rows: int, out_features: int, in_features: int) -> bool:
    """Whether oneDNN's packed GEMM beats MKL's for ``(rows, in) @ (in, out)``: measured on the
    development machine (AVX-512, 2 threads; microseconds MKL / oneDNN, out = 4 in): in 256 at 1 row
    13.6/15.7, at 4 rows 40.8/15.7, at 32 rows 96.9/44.8; in 128 at 8 rows 10.6/13.2, at 16 rows
    15.6/15.0, at 64 rows 43.8/26.7; in 512 at 1 row 51.9/35.7. oneDNN costs ~11 us per call."""
    small = min(out_features, in_features)
    return small >= 512 or (small >= 256 and rows >= 2) or (small >= 128 and rows >= 16)


def packed_weight(weight: Tensor, rows: int) -> Tensor | None:
    """``weight (out, in)`` reordered for oneDNN's GEMM with ``rows`` input rows, when that is the
    faster kernel (float32 on a CPU with oneDNN); else None (use ``torch.mm``)."""
    if (weight.dtype != torch.float32 or weight.device.type != "cpu" or not _packs(rows, *weight.shape)
            or not onednn_works()):
        return None
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), rows)


def packed_linear(x: Tensor, packed: Tensor) -> Tensor:
    """``x @ weight.T`` with a weight from :func:`packed_weight`."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")


def linear_rows(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor | None:
    """``x (N, I) @ weight (G, I)^T + bias`` on oneDNN when that is the faster kernel, else None
    (the caller runs ``torch.mm``). Measured ``(2048, 256) @ (256, 1024)``: MKL 9.5 ms, oneDNN with
    the packing 2.9 ms; ``(8192, 256) @ (256, 1024)``: 30.4 and 18.4 ms."""
    if torch.compiler.is_compiling() or not x.is_contiguous() or x.dtype != torch.float32:
        return None
    packed = packed_weight(weight, x.size(0))
    if packed is None:
        return None
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
