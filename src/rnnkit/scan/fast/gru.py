"""Hand-written backpropagation through time for the GRU (torch's formulation, gate layout r, z, n),
optionally layer-normalised, with recurrent dropout and zoneout.

Same plan as :mod:`rnnkit.scan.fast.lstm`: forward fills preallocated buffers with one addmm per
step; backward precomputes, for all steps at once, the factors ``K`` that turn ``d h~_t`` into the
gradient of the recurrent pre-activation ``hh_t``, so that the loop is three small ops and one
addmm per step. With ``hh = LN(a) * w + b_hh`` (or ``a + b_hh``), ``a = (h * m) W_hh^T``::

    dhh_r = dh~ * n' hh_n r (1 - r)            n' = (1 - z)(1 - n^2)
    dhh_z = dh~ * (h_{t-1} - n) z (1 - z)       dx_n = dh~ * n',   dhh_n = dh~ * n' r
    dh_{t-1} = dh~ * z + (da W_hh) * m [+ d * dh_t]

Symbols: T steps, B batch, H hidden.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.cells._autograd import differentiable_grads, plain_backward_needed
from rnnkit.cells._buffers import take
from rnnkit.cells._onednn import packed_linear, packed_weight
from rnnkit.cells._trace import graph_capture, traceable_needed
from rnnkit.scan.fast.native import native_ops
from rnnkit.scan.fast.reference import gru_reference
from rnnkit.scan.fast.simple import blend_kept

__all__ = ["gru_sequence"]

_ln = torch.ops.aten.native_layer_norm.out
_ln_backward = torch.ops.aten.native_layer_norm_backward.out


def gru_sequence(
    xp: Tensor, h0: Tensor, weight_hh: Tensor, bias_hh: Tensor | None = None, *, ln_hh: Tensor | None = None,
    eps: float = 1e-5, drop: Tensor | None = None, keep: Tensor | None = None, keep_from: int = 0,
) -> Tensor:
    """Run the GRU over ``xp (T, B, 3H)`` (``x W_ih^T + b_ih``, or its LN) from ``h0 (B, H)``.
    ``keep (T, B, H|1)``: zoneout/length keep factors from step ``keep_from`` on. ``ln_hh``:
    the recurrent LN's weight; its shift is ``bias_hh``. Returns every ``h_t`` ``(T, B, H)``."""
    if ln_hh is not None and bias_hh is None:
        bias_hh = torch.zeros_like(ln_hh)  # the LN kernels want a shift; this one has no gradient
    if graph_capture(xp):  # torch.compile/export: one custom op (imported here: ops imports this module)
        from rnnkit.scan.fast.ops import gru_op

        return gru_op(xp, h0, weight_hh, bias_hh, ln_hh, drop, keep, eps, keep_from)
    if traceable_needed(xp):  # torch.func transforms, TorchScript tracing: the recurrence in plain torch ops
        return gru_reference(xp, h0, weight_hh, bias_hh, ln_hh, drop, keep, eps, keep_from)
    return _GRU.apply(xp, h0, weight_hh, bias_hh, ln_hh, drop, keep, eps, keep_from)


class _GRU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xp, h0, w_hh, b_hh, ln_hh, drop, keep, eps, keep_from):
        T, B, G3 = xp.shape
        H = G3 // 3
        RZ = take((T, B, 2 * H), xp)  # sigmoid(r), sigmoid(z)
        N = take((T, B, H), xp)  # n
        Hs = take((T, B, H), xp)  # h_t
        Ht = take((T, B, H), xp) if keep is not None else Hs  # h~_t, before zoneout
        HH = take((T, B, G3), xp)  # hh_t (after LN and b_hh)
        Araw = take((T, B, G3), xp) if ln_hh is not None else None
        stats = xp.new_empty(2, T, B, 1) if ln_hh is not None else None  # LN mean, rstd
        w_t = w_hh.t()
        w_packed = packed_weight(w_hh, B)  # oneDNN's GEMM where it is the faster one (float32, CPU)
        ops = native_ops() if xp.device.type == "cpu" and xp.dtype in (torch.float32, torch.float64) else None
        if ops is not None:  # the same loop in C++ (csrc/steps.cpp), same buffers
            ops.gru_loop(xp.contiguous(), h0.contiguous(), w_t, w_packed, b_hh, ln_hh, drop, keep, eps, keep_from, RZ,
                         N, Hs, Ht if keep is not None else None, HH, Araw, stats)
            return _GRU._finish(ctx, (h0, w_hh, b_hh, ln_hh, drop, keep), xp, Hs, (RZ, N, HH, Araw, stats), eps,
                                keep_from)
        xrz, xn = xp[..., : 2 * H].unbind(0), xp[..., 2 * H :].unbind(0)
        hhs, hh_rz, hh_n = HH.unbind(0), HH[..., : 2 * H].unbind(0), HH[..., 2 * H :].unbind(0)
        rzs, rs, zs = RZ.unbind(0), RZ[..., :H].unbind(0), RZ[..., H:].unbind(0)
        ns, hs, hts = N.unbind(0), Hs.unbind(0), Ht.unbind(0)
        h = h0
        for t in range(T):
            hin = h if drop is None else h * drop
            if w_packed is not None:
                lin = packed_linear(hin, w_packed)  # (B, 3H)
                if ln_hh is not None:
                    Araw[t].copy_(lin)
                    _ln(Araw[t], (G3,), ln_hh, b_hh, eps, out0=hhs[t], out1=stats[0][t], out2=stats[1][t])
                elif b_hh is not None:
                    torch.add(lin, b_hh, out=hhs[t])
                else:
                    hhs[t].copy_(lin)
            elif ln_hh is not None:
                torch.mm(hin, w_t, out=Araw[t])
                _ln(Araw[t], (G3,), ln_hh, b_hh, eps, out0=hhs[t], out1=stats[0][t], out2=stats[1][t])
            elif b_hh is not None:
                torch.addmm(b_hh, hin, w_t, out=hhs[t])  # (B, 3H)
            else:
                torch.mm(hin, w_t, out=hhs[t])
            torch.add(xrz[t], hh_rz[t], out=rzs[t]).sigmoid_()
            torch.addcmul(xn[t], rs[t], hh_n[t], out=ns[t]).tanh_()
            torch.lerp(ns[t], h, zs[t], out=hts[t])  # (1 - z) n + z h
            if keep is not None:
                blend_kept(hts[t], h, keep, t, keep_from, out=hs[t])
            h = hs[t]
        return _GRU._finish(ctx, (h0, w_hh, b_hh, ln_hh, drop, keep), xp, Hs, (RZ, N, HH, Araw, stats), eps, keep_from)

    @staticmethod
    def _finish(ctx, inputs, xp, Hs, buffers, eps, keep_from):
        ctx.save_for_backward(*inputs, Hs, xp)
        ctx.buffers = buffers
        ctx.eps, ctx.keep_from = eps, keep_from
        return Hs

    @staticmethod
    def backward(ctx, dHs):
        h0, w_hh, b_hh, ln_hh, drop, keep, Hs, xp = ctx.saved_tensors
        if plain_backward_needed(dHs):  # double backward, or vmap over backward: the plain form
            return differentiable_grads(gru_reference, ctx, (xp, h0, w_hh, b_hh, ln_hh, drop, keep),
                                        (ctx.eps, ctx.keep_from), (dHs,))
        RZ, N, HH, Araw, stats = ctx.buffers
        keep_from = ctx.keep_from
        T, B, H = Hs.shape
        G3 = 3 * H
        r, z = RZ.split(H, dim=-1)
        Hprev = torch.cat([h0.unsqueeze(0), Hs[:-1]], out=take(Hs.shape, Hs))  # (T, B, H)
        Kn = torch.mul(N, N, out=take(N.shape, N)).neg_().add_(1)
        torch.addcmul(Kn, Kn, z, value=-1, out=Kn)  # d pre_n / d h~ = (1 - n^2)(1 - z)
        K = take(HH.shape, HH)  # becomes d hh
        Kr, Kz, Khn = K.split(H, dim=-1)
        tmp = torch.addcmul(z, z, z, value=-1, out=take(N.shape, N))  # z (1 - z)
        torch.sub(Hprev, N, out=Kz).mul_(tmp)
        torch.addcmul(r, r, r, value=-1, out=tmp)  # r (1 - r)
        torch.mul(Kn, HH[..., 2 * H :], out=Kr).mul_(tmp)
        torch.mul(Kn, r, out=Khn)
        omk = None if keep is None else 1 - keep
        k3, ks, zs, dys = K.unflatten(-1, (3, H)).unbind(0), K.unbind(0), z.unbind(0), dHs.unbind(0)
        DHt = []  # d h~_t, last step first
        if ln_hh is not None:  # per-step LN gradients: input, weight, bias
            DA, ln_w_steps, ln_b_steps = take(K.shape, K), K.new_empty(T, G3), K.new_empty(T, G3)
        w_packed = packed_weight(w_hh.t(), B)  # da (B, 3H) @ W_hh (3H, H) on oneDNN where it is faster
        dh = dys[T - 1]
        for t in range(T - 1, -1, -1):
            zoned = keep is not None and t >= keep_from
            dht = dh * omk[t] if zoned else dh
            DHt.append(dht)
            k3[t].mul_(dht.unsqueeze(1))  # d hh_t
            da = ks[t]
            if ln_hh is not None:
                da = DA[t]
                _ln_backward(ks[t], Araw[t], (G3,), stats[0][t], stats[1][t], ln_hh, b_hh, (True, True, True),
                             out0=da, out1=ln_w_steps[t], out2=ln_b_steps[t])
            dh_prev = torch.addcmul(dys[t - 1], zs[t], dht) if t > 0 else zs[t] * dht
            rec = packed_linear(da, w_packed) if w_packed is not None else None
            if drop is None:
                dh_prev.addmm_(da, w_hh) if rec is None else dh_prev.add_(rec)
            else:
                dh_prev.addcmul_(da @ w_hh if rec is None else rec, drop)
            if zoned:
                dh_prev.addcmul_(keep[t], dh)
            dh = dh_prev
        need = ctx.needs_input_grad
        Kn.mul_(torch.stack(DHt[::-1], out=take(Hs.shape, Hs)))
        dxp = torch.cat([K[..., : 2 * H], Kn], dim=-1, out=take(K.shape, K))  # (T, B, 3H)
        DA = K if ln_hh is None else DA  # (T, B, 3H): the gradient of the recurrent matmul's output
        d_w = d_bias = d_ln = None
        if need[2]:
            Hin = Hprev.mul_(drop) if drop is not None else Hprev
            d_w = DA.flatten(0, 1).t() @ Hin.flatten(0, 1)  # (3H, H)
        if need[3]:
            d_bias = K.sum((0, 1)) if ln_hh is None else ln_b_steps.sum(0)
        if ln_hh is not None and need[4]:
            d_ln = ln_w_steps.sum(0)
        return dxp, dh, d_w, d_bias, d_ln, None, None, None, None
