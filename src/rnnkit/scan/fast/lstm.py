"""Hand-written backpropagation through time for the LSTM family: plain, projected, layer-normalised
(Ba et al. 2016), peephole (Gers & Schmidhuber 2000), with recurrent dropout and zoneout.

One ``torch.autograd.Function`` runs the whole sequence. Forward: one addmm per step into a
preallocated ``(T, B, 4H)`` gate buffer, activations in place, no autograd graph. Backward: the
per-step factors that do not depend on the incoming gradient are computed for all steps at once
first (``K``, ``A``, ``F`` below); the loop then does five small ops and one addmm per step; the
weight gradients are one GEMM over all ``T * B`` rows at the end. The reference is
:class:`rnnkit.cells.LayerNormLSTMCell.step` run by :func:`rnnkit.scan.sequential_scan`; tests
assert both agree in outputs and every gradient. Layout idea (one gate buffer, BPTT over the
whole sequence, weight gradients batched over time) after haste (Nicolas, lmnt-com/haste).

Symbols: T steps, B batch, H hidden, R = proj_size or H. Gate order i, f, g, o (torch's).
Backward identities used (``m = o * tanh(n)``, ``n = LN(c~)`` or ``c~``)::

    dpre_i = dc~ * g i (1 - i)        = dc~ * K_i     dpre_f = dc~ * c_{t-1} f (1 - f) = dc~ * K_f
    dpre_g = dc~ * i (1 - g^2)        = dc~ * K_g     dpre_o = dm * tanh(n) o (1 - o)  = dm  * K_o
    dc~    = dc_t + LN'(dm * o (1 - tanh(n)^2)) [+ w_co * dpre_o]
    dc_{t-1} = dc~ * (f + w_ci K_i + w_cf K_f) [+ d_c * dc_t]     dh_{t-1} = (da W_hh) * m [+ d_h * dh_t]
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.cells._autograd import differentiable_grads, plain_backward_needed
from rnnkit.cells._buffers import take
from rnnkit.cells._onednn import packed_linear, packed_weight
from rnnkit.cells._trace import graph_capture, traceable_needed
from rnnkit.scan.fast.native import native_ops
from rnnkit.scan.fast.reference import lstm_reference

__all__ = ["lstm_sequence"]

_ln = torch.ops.aten.native_layer_norm.out
_ln_backward = torch.ops.aten.native_layer_norm_backward.out


def lstm_sequence(
    xp: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor, *, weight_hr: Tensor | None = None,
    ln_hh: tuple[Tensor, Tensor] | None = None, ln_cell: tuple[Tensor, Tensor] | None = None,
    peephole: Tensor | None = None,
    eps: float = 1e-5, drop: Tensor | None = None, keep_h: Tensor | None = None, keep_c: Tensor | None = None,
    keep_from: int = 0,
) -> tuple[Tensor, Tensor]:
    """Run the LSTM over ``xp (T, B, 4H)`` (the input projection with its bias) from
    ``(h0 (B, R), c0 (B, H))``. ``keep_h (T, B, R|1)``/``keep_c (T, B, H|1)``: the zoneout (and
    length) keep factors ``d`` from step ``keep_from`` on. Returns every ``h_t`` ``(T, B, R)``
    and the last ``c`` ``(B, H)``. ``ln_hh = (weight, bias)`` normalises the recurrent
    pre-activation over all 4H, ``ln_cell = (weight, bias)`` the cell state."""
    hw, hb = ln_hh if ln_hh is not None else (None, None)
    cw, cb = ln_cell if ln_cell is not None else (None, None)
    if graph_capture(xp):  # torch.compile/export: one custom op (imported here: ops imports this module)
        from rnnkit.scan.fast.ops import lstm_op

        return lstm_op(xp, h0, c0, weight_hh, weight_hr, hw, hb, cw, cb, peephole, drop, keep_h, keep_c,
                       eps, keep_from)
    if traceable_needed(xp):  # torch.func transforms, TorchScript tracing: the recurrence in plain torch ops
        return lstm_reference(xp, h0, c0, weight_hh, weight_hr, hw, hb, cw, cb, peephole, drop, keep_h, keep_c,
                              eps, keep_from)
    return _LSTM.apply(xp, h0, c0, weight_hh, weight_hr, hw, hb, cw, cb, peephole, drop, keep_h, keep_c,
                       eps, keep_from)


def _small_gemm_takes(rows: int, depth: int, width: int, dtype: torch.dtype) -> bool:
    """Whether the C++ loops' register-blocked GEMM (csrc/common.h ``small_gemm_takes``, the same test)
    runs a step's recurrent ``(rows, depth) @ (depth, width)``: at most 32 rows, a weight of at most
    2 MiB (it stays in cache). There it is as fast as oneDNN's packed GEMM or faster (fwd+bwd, ms,
    ours / packed: B8 T256 H256 26.5 / 31.6, B32 H256 103.7 / 106.3, B1 H256 11.6 / 12.7); with
    larger weights it is slower (B32 H512 383 / 353, H1024 1676 / 1353), so those stay packed."""
    size = 8 if dtype == torch.float64 else 4
    return rows <= 32 and width % (128 // size) == 0 and depth * width * size <= 2 << 20


class _LSTM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xp, h0, c0, w_hh, w_hr, ln_hh, ln_hb, ln_cw, ln_cb, peep, drop, keep_h, keep_c, eps, keep_from):
        T, B, G4 = xp.shape
        H, R = G4 // 4, h0.size(1)
        G = take((T, B, G4), xp)  # activated gates i, f, g, o
        C = take((T, B, H), xp)  # c~_t, before zoneout
        TC = take((T, B, H), xp)  # tanh(n_t)
        Hs = take((T, B, R), xp)  # h_t, the output
        zoned = keep_h is not None or keep_c is not None
        Cs = take((T, B, H), xp) if zoned else C  # c_t, after zoneout
        Ht = take((T, B, R), xp) if keep_h is not None else Hs  # h~_t
        M = take((T, B, H), xp) if w_hr is not None else Ht  # o * tanh(n), before the projection
        Araw = take((T, B, G4), xp) if ln_hh is not None else None
        stats_g = xp.new_empty(2, T, B, 1) if ln_hh is not None else None  # LN mean, rstd
        stats_c = xp.new_empty(2, T, B, 1) if ln_cw is not None else None
        w_t, hr_t = w_hh.t(), (w_hr.t() if w_hr is not None else None)
        inputs = (h0, c0, w_hh, w_hr, ln_hh, ln_hb, ln_cw, ln_cb, peep, drop, keep_h, keep_c)
        buffers = (G, C, TC, Cs, M if w_hr is not None else None, Araw, stats_g, stats_c)
        ops = native_ops() if xp.device.type == "cpu" and xp.dtype in (torch.float32, torch.float64) else None
        w_packed = None if (ops is not None and _small_gemm_takes(B, R, G4, xp.dtype)) else packed_weight(w_hh, B)
        if ops is not None:  # the same loop in C++ (csrc/lstm.cpp), same buffers
            ops.lstm_loop(xp.contiguous(), h0.contiguous(), c0.contiguous(), w_t, w_packed, hr_t, ln_hh, ln_hb, ln_cw,
                          ln_cb, peep, drop, keep_h, keep_c, eps, keep_from, G, C, TC, Hs, Cs if zoned else None,
                          Ht if keep_h is not None else None, M if w_hr is not None else None, Araw, stats_g,
                          stats_c)
            return _LSTM._finish(ctx, inputs, xp, Hs, buffers, eps, keep_from, Cs[-1])
        xs, gs, cs, tcs = xp.unbind(0), G.unbind(0), C.unbind(0), TC.unbind(0)
        hs, css, hts, ms = Hs.unbind(0), Cs.unbind(0), Ht.unbind(0), M.unbind(0)
        g_if, g_g, g_o = G[..., : 2 * H].unbind(0), G[..., 2 * H : 3 * H].unbind(0), G[..., 3 * H :].unbind(0)
        g_i, g_f = G[..., :H].unbind(0), G[..., H : 2 * H].unbind(0)
        if peep is not None:
            p_if, p_o = peep[:2], peep[2]  # (2, H), (H,)
            g_if2 = G[..., : 2 * H].unflatten(-1, (2, H)).unbind(0)  # T x (B, 2, H)
        h, c = h0, c0
        for t in range(T):
            hin = h if drop is None else h * drop
            if ln_hh is None:
                if w_packed is not None:
                    torch.add(xs[t], packed_linear(hin, w_packed), out=gs[t])
                else:
                    torch.addmm(xs[t], hin, w_t, out=gs[t])  # (B, 4H)
            else:
                if w_packed is not None:
                    Araw[t].copy_(packed_linear(hin, w_packed))
                else:
                    torch.mm(hin, w_t, out=Araw[t])
                _ln(Araw[t], (G4,), ln_hh, ln_hb, eps, out0=gs[t], out1=stats_g[0][t], out2=stats_g[1][t])
                gs[t].add_(xs[t])
            if peep is not None:
                g_if2[t].addcmul_(p_if, c.unsqueeze(1))
            g_if[t].sigmoid_()
            g_g[t].tanh_()
            torch.mul(g_f[t], c, out=cs[t]).addcmul_(g_i[t], g_g[t])  # c~ = f c + i g
            if peep is not None:
                g_o[t].addcmul_(p_o, cs[t])
            g_o[t].sigmoid_()
            if ln_cw is None:
                torch.tanh(cs[t], out=tcs[t])
            else:
                _ln(cs[t], (H,), ln_cw, ln_cb, eps, out0=tcs[t], out1=stats_c[0][t], out2=stats_c[1][t])
                tcs[t].tanh_()
            torch.mul(g_o[t], tcs[t], out=ms[t])
            if w_hr is not None:
                torch.mm(ms[t], hr_t, out=hts[t])
            if zoned:
                if t >= keep_from:
                    if keep_h is not None:
                        torch.lerp(hts[t], h, keep_h[t], out=hs[t])
                    if keep_c is not None:
                        torch.lerp(cs[t], c, keep_c[t], out=css[t])
                    else:
                        css[t].copy_(cs[t])
                else:
                    if keep_h is not None:
                        hs[t].copy_(hts[t])
                    css[t].copy_(cs[t])
            h, c = hs[t], css[t]
        return _LSTM._finish(ctx, inputs, xp, Hs, buffers, eps, keep_from, c)

    @staticmethod
    def _recurrence(K, A, Fc, Po, dHs, dcT, w_hh, w_packed, w_hr, drop, keep_h, keep_c, keep_from, DHt, C, stats_c,
                    ln_cw, ln_cb, Araw, stats_g, ln_hh, ln_hb, ln_h_buffers, ln_c_grads):
        """The backward's recurrence in Python (the C++ loop's reference and fallback): fills
        ``K`` with dpre (and ``DA``, the LN gradients, ``DHt``) in place; returns d h0, d c0."""
        T, B, G4 = K.shape
        H = G4 // 4
        proj = w_hr is not None
        k3 = K[..., : 3 * H].unflatten(-1, (3, H)).unbind(0)  # T x (B, 3, H)
        ks, kos, As, fcs = K.unbind(0), K[..., 3 * H :].unbind(0), A.unbind(0), Fc.unbind(0)
        dys = dHs.unbind(0)
        DA, d_ln_hw, d_ln_hb = ln_h_buffers
        d_ln_cw, d_ln_cb = ln_c_grads
        if ln_cw is not None:
            dn, dx_c = K.new_empty(B, H), K.new_empty(B, H)
        omk_h = None if keep_h is None else 1 - keep_h
        omk_c = None if keep_c is None else 1 - keep_c
        rec = (lambda a: packed_linear(a, w_packed)) if w_packed is not None else (lambda a: a @ w_hh)
        dh, dc = dys[T - 1], dcT  # total gradients w.r.t. h_t and c_t
        for t in range(T - 1, -1, -1):
            zoned = t >= keep_from
            dht = dh * omk_h[t] if (zoned and keep_h is not None) else dh  # d h~_t
            dct = dc * omk_c[t] if (zoned and keep_c is not None) else dc  # d c~_t (so far)
            if proj:
                DHt[t].copy_(dht)
                dm = dht @ w_hr  # (B, H)
            else:
                dm = dht
            if ln_cw is None:
                dct = torch.addcmul(dct, dm, As[t])
            else:
                _ln_backward(torch.mul(dm, As[t], out=dn), C[t], (H,), stats_c[0][t], stats_c[1][t], ln_cw, ln_cb,
                             (True, True, True), out0=dx_c, out1=d_ln_cw[t], out2=d_ln_cb[t])
                dct = dx_c.add_(dct)
                if Po is not None:
                    dct.addcmul_(dm, Po[t])
            k3[t].mul_(dct.unsqueeze(1))  # dpre_i, dpre_f, dpre_g
            kos[t].mul_(dm)  # dpre_o
            dc_prev = dct * fcs[t]
            if zoned and keep_c is not None:
                dc_prev.addcmul_(keep_c[t], dc)
            da = ks[t]
            if ln_hh is not None:
                da = DA[t]
                _ln_backward(ks[t], Araw[t], (G4,), stats_g[0][t], stats_g[1][t], ln_hh, ln_hb, (True, True, True),
                             out0=da, out1=d_ln_hw[t], out2=d_ln_hb[t])
            if drop is None and w_packed is None:
                dh_prev = torch.addmm(dys[t - 1], da, w_hh) if t > 0 else da @ w_hh
            elif drop is None:
                dh_prev = rec(da).add_(dys[t - 1]) if t > 0 else rec(da)
            else:
                dh_prev = rec(da).mul_(drop)
                if t > 0:
                    dh_prev.add_(dys[t - 1])
            if zoned and keep_h is not None:
                dh_prev.addcmul_(keep_h[t], dh)
            dh, dc = dh_prev, dc_prev
        return dh, dc

    @staticmethod
    def _finish(ctx, inputs, xp, Hs, buffers, eps, keep_from, c_last):
        ctx.save_for_backward(*inputs, Hs, xp)
        # never an output on ctx (M is Ht, maybe Hs, without a projection): output -> grad_fn -> ctx -> output
        # is a cycle the garbage collector cannot see, which would keep every buffer and weight alive
        ctx.buffers = buffers
        ctx.eps, ctx.keep_from = eps, keep_from
        return Hs, c_last.clone()

    @staticmethod
    def backward(ctx, dHs, dcT):
        h0, c0, w_hh, w_hr, ln_hh, ln_hb, ln_cw, ln_cb, peep, drop, keep_h, keep_c, Hs, xp = ctx.saved_tensors
        if plain_backward_needed(dHs, dcT):  # double backward, or vmap over backward: the plain form
            inputs = (xp, h0, c0, w_hh, w_hr, ln_hh, ln_hb, ln_cw, ln_cb, peep, drop, keep_h, keep_c)
            return differentiable_grads(lstm_reference, ctx, inputs, (ctx.eps, ctx.keep_from), (dHs, dcT))
        G, C, TC, Cs, M, Araw, stats_g, stats_c = ctx.buffers
        keep_from = ctx.keep_from
        T, B, G4 = G.shape
        H = G4 // 4
        K = take(G.shape, G)  # becomes dpre, the gate pre-activation gradient
        Ki, Kf, Kg, Ko = K.split(H, dim=-1)
        proj = w_hr is not None
        DHt = take(Hs.shape, Hs) if proj else None  # d h~ (before the projection)
        ops = native_ops() if K.device.type == "cpu" and K.dtype in (torch.float32, torch.float64) else None
        native = ops is not None and (drop is None or (drop.dim() == 2 and drop.stride(1) == 1))
        # the LN weight and bias gradients, summed over rows below: one row per step in Python, one per
        # thread in C++ (each thread adds its own steps' rows into its own)
        rows = torch.get_num_threads() if native else T
        DA = d_ln_hw = d_ln_hb = d_ln_cw = d_ln_cb = None
        if ln_hh is not None:  # LN gradients: input (per step), weight, bias
            DA, d_ln_hw, d_ln_hb = take(K.shape, K), K.new_empty(rows, G4), K.new_empty(rows, G4)
        if ln_cw is not None:  # cell LN gradients: weight, bias
            d_ln_cw, d_ln_cb = K.new_empty(rows, H), K.new_empty(rows, H)
        # da (B, 4H) @ W_hh (4H, R) on oneDNN where it is faster, unless the C++ small-batch GEMM takes it
        w_packed = None if (native and _small_gemm_takes(B, G4, dHs.size(-1), K.dtype)) else packed_weight(w_hh.t(), B)
        if native:
            # in C++: each step computes its own factors (those the Python form computes for all steps
            # at once, below) from G, TC and Cs, then runs the recurrence; K is filled with dpre in place
            dh, dc = ops.lstm_backward(
                K, G, TC, Cs, c0.contiguous(), peep, dHs.contiguous(), dcT.contiguous(), w_hh, w_packed, w_hr, drop,
                keep_h, keep_c, keep_from, DHt, C if ln_cw is not None else None, stats_c, ln_cw, ln_cb, d_ln_cw,
                d_ln_cb, Araw, stats_g, ln_hh, ln_hb, DA, d_ln_hw, d_ln_hb)
        else:
            # -- factors that do not depend on the incoming gradient, for all steps at once --------
            i, f, g, o = G.split(H, dim=-1)  # (T, B, H) views
            torch.addcmul(i, i, i, value=-1, out=Ki).mul_(g)  # g i (1 - i)
            torch.addcmul(f, f, f, value=-1, out=Kf)  # f (1 - f) c_{t-1}
            Kf[0].mul_(c0)
            Kf[1:].mul_(Cs[:-1])
            torch.addcmul(i, i, torch.mul(g, g, out=Kg), value=-1, out=Kg)  # i (1 - g^2)
            torch.addcmul(o, o, o, value=-1, out=Ko).mul_(TC)  # tanh(n) o (1 - o)
            A = torch.mul(TC, TC, out=take(TC.shape, TC))
            torch.addcmul(o, o, A, value=-1, out=A)  # d tanh(n) o / d n = o (1 - tanh(n)^2)
            Fc, Po = f, None
            if peep is not None:
                Fc = f + Ki * peep[0] + Kf * peep[1]  # d c_{t-1} / d c~
                Po = Ko * peep[2]  # d c~ via the o peephole, per dm
                if ln_cw is None:
                    A.add_(Po)
            # -- the recurrence, last step first -------------------------------------------------
            dh, dc = _LSTM._recurrence(K, A, Fc, Po, dHs, dcT, w_hh, w_packed, w_hr, drop, keep_h, keep_c, keep_from,
                                       DHt, C, stats_c, ln_cw, ln_cb, Araw, stats_g, ln_hh, ln_hb,
                                       (DA, d_ln_hw, d_ln_hb), (d_ln_cw, d_ln_cb))
        # -- gradients batched over time -----------------------------------------------------------
        need = ctx.needs_input_grad
        DA = K if ln_hh is None else DA  # (T, B, 4H): the gradient of the recurrent matmul's output
        d_w = d_hr = d_peep = None
        if need[3]:
            h_first, h_rest = (h0, Hs[:-1]) if drop is None else (h0 * drop, Hs[:-1] * drop)
            d_w = torch.addmm(DA[0].t() @ h_first, DA[1:].flatten(0, 1).t(), h_rest.flatten(0, 1))  # (4H, R)
        grads = [None] * 4  # LN: recurrent weight, bias; cell weight, bias
        if ln_hh is not None:
            grads[:2] = [d_ln_hw.sum(0) if need[5] else None, d_ln_hb.sum(0) if need[6] else None]
        if ln_cw is not None:
            grads[2:] = [d_ln_cw.sum(0) if need[7] else None, d_ln_cb.sum(0) if need[8] else None]
        if proj and need[4]:
            d_hr = DHt.flatten(0, 1).t() @ M.flatten(0, 1)  # (R, H)
        if peep is not None and need[9]:
            d_peep = torch.stack([
                (Ki[0] * c0).sum(0) + (Ki[1:] * Cs[:-1]).sum((0, 1)),
                (Kf[0] * c0).sum(0) + (Kf[1:] * Cs[:-1]).sum((0, 1)),
                (Ko * C).sum((0, 1)),
            ])  # (3, H)
        return (K, dh, dc, d_w, d_hr, *grads, d_peep, None, None, None, None, None)
