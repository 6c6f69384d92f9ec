"""Input projections for every step at once, ``(T, B, I) -> (T, B, G)``, written into reused buffers
(:mod:`rnnkit.cells._buffers`).

The math is ``F.linear`` and ``F.layer_norm(F.linear(...))``; these Functions only avoid a fresh
``(T, B, G)`` allocation (and its page faults) per call and per backward, which on the
development machine cost as much as the GEMM. The LayerNorm runs in the fast engine's C++ row
kernels when they are built (``rnnkit_cpu::layer_norm_rows``: one threaded pass, straight into the
buffer; ATen's ``.out`` variants compute into a fresh tensor and copy it), else in ATen's.
Symbols: N = T * B rows, I inputs, G outputs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.cells._autograd import differentiable_grads, plain_backward_needed
from rnnkit.cells._buffers import take
from rnnkit.cells._onednn import linear_rows
from rnnkit.cells._trace import traceable_needed

__all__ = ["linear", "linear_norm"]

_ln = torch.ops.aten.native_layer_norm.out
_ln_backward = torch.ops.aten.native_layer_norm_backward
_ln_backward_out = torch.ops.aten.native_layer_norm_backward.out


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight^T + bias`` over the last dimension (as ``F.linear``)."""
    if x.dim() < 2 or traceable_needed(x):
        return torch.nn.functional.linear(x, weight, bias)
    return _Linear.apply(x, weight, bias)


def linear_norm(x: Tensor, weight: Tensor, ln_weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    """``LN(x @ weight^T) * ln_weight + bias``, the norm over the last dimension (as ``F.layer_norm``)."""
    if x.dim() < 2 or traceable_needed(x):
        z = torch.nn.functional.linear(x, weight)
        return torch.nn.functional.layer_norm(z, (z.size(-1),), ln_weight, bias, eps)
    return _LinearNorm.apply(x, weight, ln_weight, bias, eps)


#: returns the C++ row LayerNorm kernels' namespace or None; set by rnnkit.scan.fast.native when
#: it is imported (the cells sit below the scans and do not import them)
ROW_NORM_PROVIDER: list = []


def _row_norm_ops(z: Tensor):
    """The C++ row LayerNorm kernels for ``z``, or None (not built, not a CPU float tensor)."""
    if not ROW_NORM_PROVIDER or z.device.type != "cpu" or z.dtype not in (torch.float32, torch.float64):
        return None
    return ROW_NORM_PROVIDER[0]()


def _rows(x: Tensor) -> Tensor:
    return x.reshape(-1, x.size(-1))  # (N, I)


def _input_grad(dz: Tensor, weight: Tensor, x: Tensor) -> Tensor:
    fast = linear_rows(dz, weight.t())  # (N, I) on oneDNN, where it is faster
    if fast is not None:
        return fast.view(x.shape)
    dx = take(x.shape, x)
    torch.mm(dz, weight, out=_rows(dx))  # (N, I)
    return dx


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        fast = linear_rows(_rows(x), weight, bias)  # (N, G) on oneDNN, where it is faster
        if fast is not None:
            out = fast.view(*x.shape[:-1], weight.size(0))
        else:
            out = take((*x.shape[:-1], weight.size(0)), x)
            if bias is None:
                torch.mm(_rows(x), weight.t(), out=_rows(out))
            else:
                torch.addmm(bias, _rows(x), weight.t(), out=_rows(out))  # (N, G)
        ctx.save_for_backward(x, weight, bias)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias = ctx.saved_tensors
        if plain_backward_needed(dout):  # double backward, or vmap over backward: the plain form
            return differentiable_grads(torch.nn.functional.linear, ctx, (x, weight, bias), (), (dout,))
        dz = _rows(dout)
        need = ctx.needs_input_grad
        dx = _input_grad(dz, weight, x) if need[0] else None
        dw = dz.t() @ _rows(x) if need[1] else None  # (G, I)
        db = dz.sum(0) if ctx.has_bias and need[2] else None
        return dx, dw, db


class _LinearNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, ln_weight, bias, eps):
        G = weight.size(0)
        fast = linear_rows(_rows(x), weight)  # (N, G) on oneDNN, where it is faster
        if fast is not None:
            z = fast.view(*x.shape[:-1], G)
        else:
            z = take((*x.shape[:-1], G), x)
            torch.mm(_rows(x), weight.t(), out=_rows(z))  # (N, G)
        out = take(z.shape, z)
        n = _rows(z).size(0)
        mean, rstd = z.new_empty(n, 1), z.new_empty(n, 1)
        ops = _row_norm_ops(z)
        if ops is not None:
            ops.layer_norm_rows(_rows(z), ln_weight, bias, eps, _rows(out), mean, rstd)
        else:
            _ln(_rows(z), (G,), ln_weight, bias, eps, out0=_rows(out), out1=mean, out2=rstd)
        ctx.save_for_backward(x, weight, ln_weight, bias, z, mean, rstd)
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx, dout):
        x, weight, ln_weight, bias, z, mean, rstd = ctx.saved_tensors
        if plain_backward_needed(dout):  # double backward, or vmap over backward: the plain form
            def plain(x, w, g, b, eps):
                z = torch.nn.functional.linear(x, w)
                return torch.nn.functional.layer_norm(z, (z.size(-1),), g, b, eps)
            return differentiable_grads(plain, ctx, (x, weight, ln_weight, bias), (ctx.eps,), (dout,))
        need = ctx.needs_input_grad
        G = weight.size(0)
        mask = (need[0] or need[1], ln_weight is not None and need[2], bias is not None and need[3])
        ops = _row_norm_ops(z)
        if ops is not None:  # the weight and bias gradients come per thread (P, G), summed here
            dz = take(z.shape, z)
            parts = z.new_empty(2, torch.get_num_threads(), G)
            w = ln_weight.contiguous() if ln_weight is not None else z.new_ones(G)
            ops.layer_norm_rows_backward(_rows(dout).contiguous(), _rows(z), mean, rstd, w, _rows(dz), parts[0],
                                         parts[1])
            dln = parts[0].sum(0) if mask[1] else None
            db = parts[1].sum(0) if mask[2] else None
        elif all(mask):  # the .out variant wants every output requested
            dz, dln, db = take(z.shape, z), z.new_empty(G), z.new_empty(G)
            _ln_backward_out(_rows(dout), _rows(z), (G,), mean, rstd, ln_weight, bias, mask,
                             out0=_rows(dz), out1=dln, out2=db)
        else:
            dz, dln, db = _ln_backward(_rows(dout), _rows(z), (G,), mean, rstd, ln_weight, bias, mask)
        dz = _rows(dz)
        dx = _input_grad(dz, weight, x) if need[0] else None
        dw = dz.t() @ _rows(x) if need[1] else None  # (G, I)
        return dx, dw, dln, db, None
