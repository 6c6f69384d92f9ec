"""Hand-written backpropagation through time for one-gate recurrences: the Elman RNN (Elman 1990)
and the IndRNN (Li et al. 2018), with recurrent dropout and zoneout::

    h~_t = act(xp_t + (h_{t-1} * m) W_hh^T)        Elman (``weight_hh (H, H)``)
    h~_t = act(xp_t + u * (h_{t-1} * m))            IndRNN (``u = weight_hh (H,)``)
    h_t  = d_t * h_{t-1} + (1 - d_t) * h~_t         (zoneout / lengths; otherwise h_t = h~_t)

Backward: ``dpre = dh~ * act'(h~)`` with ``act'`` from the stored outputs (``1 - h~^2`` for tanh,
``h~ > 0`` for relu), then ``dh_{t-1} = (dpre W_hh) * m`` (Elman) or ``dpre * u * m`` (IndRNN).
Weight gradients are one GEMM (Elman) or one reduction (IndRNN) over all steps.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.cells._autograd import differentiable_grads, plain_backward_needed
from rnnkit.cells._buffers import take
from rnnkit.cells._trace import graph_capture, traceable_needed
from rnnkit.scan.fast.native import native_ops
from rnnkit.scan.fast.reference import simple_reference

__all__ = ["blend_kept", "simple_sequence"]


def blend_kept(candidate: Tensor, previous: Tensor, keep: Tensor, t: int, keep_from: int, out: Tensor) -> Tensor:
    """``out = candidate + keep[t] * (previous - candidate)``: zoneout and length masking keep a
    fraction ``keep[t]`` of the previous state. Before step ``keep_from`` nothing is kept."""
    if t >= keep_from:
        return torch.lerp(candidate, previous, keep[t], out=out)
    return out.copy_(candidate)

_ACT = {"tanh": torch.Tensor.tanh_, "relu": torch.Tensor.relu_}


def simple_sequence(
    xp: Tensor, h0: Tensor, weight_hh: Tensor, *, activation: str = "tanh", drop: Tensor | None = None,
    keep: Tensor | None = None, keep_from: int = 0,
) -> Tensor:
    """Elman (``weight_hh`` 2-D) or IndRNN (``weight_hh`` 1-D) over ``xp (T, B, H)`` from
    ``h0 (B, H)``; returns every ``h_t`` ``(T, B, H)``."""
    if activation not in _ACT:
        raise ValueError(f"activation must be 'tanh' or 'relu', got {activation!r}")
    if graph_capture(xp):  # torch.compile/export: one custom op (imported here: ops imports this module)
        from rnnkit.scan.fast.ops import simple_op

        return simple_op(xp, h0, weight_hh, drop, keep, activation, keep_from)
    if traceable_needed(xp):  # torch.func transforms, TorchScript tracing: the recurrence in plain torch ops
        return simple_reference(xp, h0, weight_hh, drop, keep, activation, keep_from)
    return _Simple.apply(xp, h0, weight_hh, drop, keep, activation, keep_from)


class _Simple(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xp, h0, w_hh, drop, keep, activation, keep_from):
        T, B, H = xp.shape
        act = _ACT[activation]
        Hs = take((T, B, H), xp)
        Ht = take((T, B, H), xp) if keep is not None else Hs  # h~_t
        elman = w_hh.dim() == 2
        w_t = w_hh.t() if elman else w_hh
        ops = native_ops() if xp.device.type == "cpu" and xp.dtype in (torch.float32, torch.float64) else None
        if ops is not None:  # the same loop in C++ (csrc/steps.cpp), same buffers
            ops.simple_loop(xp.contiguous(), h0.contiguous(), w_hh, drop, keep, activation == "relu", keep_from, Hs,
                            Ht if keep is not None else None)
            return _Simple._finish(ctx, (h0, w_hh, drop, keep), xp, Hs, Ht, keep, activation, keep_from)
        xs, hs, hts = xp.unbind(0), Hs.unbind(0), Ht.unbind(0)
        h = h0
        for t in range(T):
            hin = h if drop is None else h * drop
            if elman:
                act(torch.addmm(xs[t], hin, w_t, out=hts[t]))
            else:
                act(torch.addcmul(xs[t], w_t, hin, out=hts[t]))
            if keep is not None:
                blend_kept(hts[t], h, keep, t, keep_from, out=hs[t])
            h = hs[t]
        return _Simple._finish(ctx, (h0, w_hh, drop, keep), xp, Hs, Ht, keep, activation, keep_from)

    @staticmethod
    def _finish(ctx, inputs, xp, Hs, Ht, keep, activation, keep_from):
        ctx.save_for_backward(*inputs, Hs, Ht if keep is not None else None, xp)
        ctx.activation, ctx.keep_from = activation, keep_from
        return Hs

    @staticmethod
    def backward(ctx, dHs):
        h0, w_hh, drop, keep, Hs, Ht, xp = ctx.saved_tensors
        if plain_backward_needed(dHs):  # double backward, or vmap over backward: the plain form
            return differentiable_grads(simple_reference, ctx, (xp, h0, w_hh, drop, keep),
                                        (ctx.activation, ctx.keep_from), (dHs,))
        Ht = Hs if Ht is None else Ht
        T = Hs.size(0)
        D = take(Ht.shape, Ht)  # act'(h~), then dpre
        if ctx.activation == "tanh":
            torch.mul(Ht, Ht, out=D).neg_().add_(1)
        else:
            torch.gt(Ht, 0, out=D)
        elman = w_hh.dim() == 2
        u = w_hh if drop is None or elman else w_hh * drop  # IndRNN: d h_{t-1} = dpre * u * m
        omk = None if keep is None else 1 - keep
        ds, dys = D.unbind(0), dHs.unbind(0)
        dh = dys[T - 1]
        for t in range(T - 1, -1, -1):
            zoned = keep is not None and t >= ctx.keep_from
            ds[t].mul_(dh * omk[t] if zoned else dh)  # dpre_t
            if elman:
                if drop is None:
                    dh_prev = torch.addmm(dys[t - 1], ds[t], w_hh) if t > 0 else ds[t] @ w_hh
                else:
                    dh_prev = (ds[t] @ w_hh).mul_(drop)
                    if t > 0:
                        dh_prev.add_(dys[t - 1])
            else:
                dh_prev = torch.addcmul(dys[t - 1], ds[t], u) if t > 0 else ds[t] * u
            if zoned:
                dh_prev.addcmul_(keep[t], dh)
            dh = dh_prev
        d_w = None
        if ctx.needs_input_grad[2]:
            Hin = torch.cat([h0.unsqueeze(0), Hs[:-1]], out=take(Hs.shape, Hs))  # (T, B, H)
            if drop is not None:
                Hin.mul_(drop)
            d_w = D.flatten(0, 1).t() @ Hin.flatten(0, 1) if elman else (D * Hin).sum((0, 1))
        return D, dh, d_w, None, None, None, None
