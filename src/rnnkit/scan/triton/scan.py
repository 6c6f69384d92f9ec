"""The Triton path: the fast engine's Functions (:mod:`rnnkit.scan.fast`) with each step's
elementwise work in one Triton kernel forward and one backward (:mod:`.lstm_kernels`,
:mod:`.gru_kernels`); the per-step matmuls and the weight gradients batched over time stay with
torch (cuBLAS). Runs the LSTM family without projection (plain, layer-normalised, peephole) and the
GRU family, with recurrent dropout, zoneout and lengths. Symbols: T steps, B batch, H hidden.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.cells._autograd import differentiable_grads, plain_backward_needed
from rnnkit.cells._buffers import take
from rnnkit.cells._trace import graph_capture
from rnnkit.cells.base import RecurrentCell, State
from rnnkit.cells.gru import GRUCell
from rnnkit.cells.layernorm import LayerNormGRUCell, LayerNormLSTMCell
from rnnkit.cells.lstm import LSTMCell
from rnnkit.scan.fast.dispatch import cell_inputs, cell_unavailable, keep_factors
from rnnkit.scan.fast.reference import gru_reference, lstm_reference
from rnnkit.scan.sequential import length_mask
from rnnkit.scan.triton import graphs, persistent
from rnnkit.scan.triton._lang import triton
from rnnkit.scan.triton.gru_kernels import gru_backward_step, gru_forward_step
from rnnkit.scan.triton.lstm_kernels import lstm_backward_step, lstm_forward_step

__all__ = ["describe", "layer_unavailable", "triton_scan"]

#: batch rows per program of the persistent kernel (tl.dot wants >= 16)
_BB = 16


def _persistent(hidden: int, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the LSTM forward runs as one persistent kernel (float64 only in the interpreter)."""
    return hidden <= persistent.PERSISTENT_MAX_H and (dtype == torch.float32 or device.type != "cuda")


def describe(cells: list[RecurrentCell], x: Tensor) -> str:
    """The Triton path's label for ``explain()``."""
    # not under torch.compile/export: dynamo will not trace the capture test (a graph break, measured)
    graphed = ("" if graph_capture(x) or not graphs.enabled(x, graphs.MIN_STEPS)
               else "; the loops replayed as CUDA graphs")
    if all(_family(c) == "lstm" for c in cells) and _persistent(cells[0].hidden_size, x.dtype, x.device):
        return f"triton (persistent LSTM forward kernel, W_hh in registers; per-step backward kernels{graphed})"
    return f"triton (one fused Triton kernel per step forward and backward; cuBLAS matmuls{graphed})"


def _family(cell: RecurrentCell) -> str | None:
    if type(cell) is LSTMCell or isinstance(cell, LayerNormLSTMCell):
        return "lstm" if not cell.proj_size else None
    if type(cell) is GRUCell or isinstance(cell, LayerNormGRUCell):
        return "gru"
    return None


def layer_unavailable(cells: list[RecurrentCell], x: Tensor) -> str | None:
    """Why the Triton kernels cannot run these cells on ``x`` (None if they can)."""
    if x.dtype not in (torch.float32, torch.float64):
        return f"the Triton kernels take float32 or float64 input, not {x.dtype}"
    for cell in cells:
        reason = cell_unavailable(cell)
        if reason is not None:
            return reason
        if _family(cell) is None:
            proj = " with proj_size" if getattr(cell, "proj_size", 0) else ""
            return f"no Triton kernel for {type(cell).__name__}{proj} (the fast engine runs it)"
    return None


def _strides(k: Tensor | None) -> tuple[int, int]:
    """Row and column strides of one step's keep factors (0 where broadcast)."""
    if k is None:
        return 0, 0
    return (k.stride(0) if k.size(0) > 1 else 0), (k.stride(1) if k.size(1) > 1 else 0)


def _strides3(k: Tensor | None) -> tuple[int, int, int]:
    """Step, row and column strides of ``(T, B|1, S|1)`` keep factors (0 where broadcast)."""
    if k is None:
        return 0, 0, 0
    return (k.stride(0),) + _strides(k[0])


def _or(t: Tensor | None, dummy: Tensor) -> Tensor:
    return dummy if t is None else t  # a pointer the kernel never reads


def triton_scan(
    cell: RecurrentCell, x_proj: Tensor, state: State, lengths: Tensor | None = None, noise: Tensor | None = None,
    keeps: list | None = None,
) -> tuple[Tensor, State]:
    """:func:`rnnkit.scan.fast.fast_scan`'s contract, with the step kernels in Triton."""
    steps = x_proj.size(0)
    spec = cell_inputs(cell, x_proj, noise, keeps)
    xp = spec["x_proj"].contiguous()
    keeps, keep_from = keep_factors(spec["keeps"], lengths, steps, xp)
    eps, drop = spec.get("eps", 1e-5), spec["drop"]
    if _family(cell) == "lstm":
        hw, hb = spec.get("ln_hh") or (None, None)
        cw, cb = spec.get("ln_cell") or (None, None)
        args = (xp, state[0], state[1], spec["weight_hh"], hw, hb, cw, cb, spec.get("peephole"), drop, keeps[0],
                keeps[1], eps, keep_from)
        if graph_capture(xp):  # torch.compile/export: one custom op (imported here: ops imports this module)
            from rnnkit.scan.triton.ops import triton_lstm_op

            hs, c_last = triton_lstm_op(*args)
        else:
            hs, c_last = _LSTM.apply(*args)
        final: State = (hs[-1], c_last)
    else:
        b_hh = spec.get("bias_hh")
        ln = spec.get("ln_hh")
        if ln is not None and b_hh is None:
            b_hh = torch.zeros_like(ln)
        args = (xp, state[0], spec["weight_hh"], b_hh, ln, drop, keeps[0], eps, keep_from)
        if graph_capture(xp):
            from rnnkit.scan.triton.ops import triton_gru_op

            hs = triton_gru_op(*args)
        else:
            hs = _GRU.apply(*args)
        final = (hs[-1],)
    if lengths is not None and keep_from < steps:
        hs = hs.masked_fill((~length_mask(lengths.to(hs.device), steps)).unsqueeze(-1), 0.0)
    return hs, final


def _lstm_plain(xp, h0, c0, w_hh, ln_hw, ln_hb, ln_cw, ln_cb, peep, drop, keep_h, keep_c, eps, keep_from):
    """The Triton LSTM's recurrence in plain torch ops (no projection): what double backward differentiates."""
    return lstm_reference(xp, h0, c0, w_hh, None, ln_hw, ln_hb, ln_cw, ln_cb, peep, drop, keep_h, keep_c, eps,
                          keep_from)


def _lstm_buffers(xp: Tensor, zoneout: bool) -> tuple[Tensor, ...]:
    """The forward's outputs: matmul output ``A`` and activated gates ``G`` ``(T, B, 4H)``; cell ``C``,
    ``tanh`` of its norm ``TC``, outputs ``Hs`` and zoned cell ``Cs`` ``(T, B, H)``; LN ``(mean,
    rstd)`` ``STG``, ``STC`` ``(T, B, 2)``."""
    T, B, G4 = xp.shape
    H = G4 // 4
    A, G = take((T, B, G4), xp), take((T, B, G4), xp)
    C, TC, Hs = take((T, B, H), xp), take((T, B, H), xp), take((T, B, H), xp)
    Cs = take((T, B, H), xp) if zoneout else C
    return A, G, C, TC, Hs, Cs, xp.new_empty(T, B, 2), xp.new_empty(T, B, 2)


def _lstm_forward_loop(xp, h0, c0, w_hh, ln_hw, ln_hb, ln_cw, ln_cb, peep, drop, keep_h, keep_c, eps, keep_from):
    """The forward, one matmul and one fused kernel per step; returns :func:`_lstm_buffers`' tensors."""
    T, B, G4 = xp.shape
    H = G4 // 4
    A, G, C, TC, Hs, Cs, STG, STC = out = _lstm_buffers(xp, keep_h is not None or keep_c is not None)
    hin = xp.new_empty(B, H)  # h_t * m for the next matmul
    w_t, block = w_hh.t(), triton.next_power_of_2(H)
    for t in range(T):
        h, c = (h0, c0) if t == 0 else (Hs[t - 1], Cs[t - 1])
        src = h if drop is None else (h0 * drop if t == 0 else hin)
        if ln_hw is not None:
            torch.mm(src, w_t, out=A[t])
        else:
            torch.addmm(xp[t], src, w_t, out=A[t])
        zh, zc = keep_h is not None and t >= keep_from, keep_c is not None and t >= keep_from
        kh, kc = (keep_h[t] if zh else None), (keep_c[t] if zc else None)
        lstm_forward_step[(B,)](
            A[t], xp[t], _or(ln_hw, xp), _or(ln_hb, xp), c.contiguous(), h.contiguous(), _or(peep, xp),
            _or(ln_cw, xp), _or(ln_cb, xp), _or(kh, xp), _or(kc, xp), _or(drop, xp),
            G[t], C[t], TC[t], Hs[t], Cs[t], hin, STG[t], STC[t], H, eps, *_strides(kh), *_strides(kc),
            LN_GATES=ln_hw is not None, LN_CELL=ln_cw is not None, HAS_PEEP=peep is not None,
            ZONE_H=zh, ZONE_C=zc, HAS_DROP=drop is not None, BLOCK=block,
        )
    return out


def _lstm_backward_loop(dHs, dcT, h0, c0, w_hh, ln_hw, ln_cw, peep, drop, keep_h, keep_c, A, G, C, TC, Cs, STG,
                        STC, keep_from):
    """The backward recurrence, one fused kernel and one matmul per step. Returns ``(K, DA, DN, dh0,
    dc0)``: the gradient of ``xp``, of the matmul output (LN_GATES; else None: it is ``K``), of the
    cell norm's output (LN_CELL; else None), and of the initial state."""
    T, B, G4 = G.shape
    H = G4 // 4
    dc = dcT
    K = take(G.shape, G)  # d pre-activation = d xp
    DA = take(G.shape, G) if ln_hw is not None else K
    DN = take(C.shape, C) if ln_cw is not None else C  # a pointer the kernel never writes without LN_CELL
    base, mm, block = dHs[T - 1].clone(), None, triton.next_power_of_2(H)
    for t in range(T - 1, -1, -1):
        zh, zc = keep_h is not None and t >= keep_from, keep_c is not None and t >= keep_from
        kh, kc = (keep_h[t] if zh else None), (keep_c[t] if zc else None)
        dcp, nbase = torch.empty_like(dc), torch.empty_like(base)
        lstm_backward_step[(B,)](
            base, _or(mm, base), _or(drop, base), dc, G[t], C[t], TC[t], (c0 if t == 0 else Cs[t - 1]),
            A[t], STG[t], _or(ln_hw, base), STC[t], _or(ln_cw, base), _or(peep, base), _or(kh, base),
            _or(kc, base), dHs[t - 1] if t > 0 else base, K[t], DA[t], DN[t], dcp, nbase,
            H, *_strides(kh), *_strides(kc),
            LN_GATES=ln_hw is not None, LN_CELL=ln_cw is not None, HAS_PEEP=peep is not None, ZONE_H=zh,
            ZONE_C=zc, HAS_DROP=mm is not None, HAS_DYP=t > 0, BLOCK=block,
        )
        if drop is not None:
            base, mm = nbase, DA[t] @ w_hh
        else:
            base = torch.addmm(nbase, DA[t], w_hh)
        dc = dcp
    dh0 = base if drop is None else base + mm * drop
    return K, (DA if ln_hw is not None else None), (DN if ln_cw is not None else None), dh0, dc


class _LSTM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xp, h0, c0, w_hh, ln_hw, ln_hb, ln_cw, ln_cb, peep, drop, keep_h, keep_c, eps, keep_from):
        T, B, G4 = xp.shape
        H = G4 // 4
        h0, c0 = h0.contiguous(), c0.contiguous()
        if _persistent(H, xp.dtype, xp.device):
            A, G, C, TC, Hs, Cs, STG, STC = out = _lstm_buffers(xp, keep_h is not None or keep_c is not None)
            kh, kc = (keep_h if keep_h is not None else xp), (keep_c if keep_c is not None else xp)
            persistent.lstm_persistent_forward[(triton.cdiv(B, _BB),)](
                xp, w_hh.contiguous(), h0, c0, _or(ln_hw, xp), _or(ln_hb, xp),
                _or(ln_cw, xp), _or(ln_cb, xp), _or(peep, xp), kh, kc, _or(drop, xp), A, G, C, TC, Hs, Cs, STG, STC,
                T, B, H, eps, keep_from, *_strides3(keep_h), *_strides3(keep_c),
                LN_GATES=ln_hw is not None, LN_CELL=ln_cw is not None, HAS_PEEP=peep is not None,
                ZONE_H=keep_h is not None, ZONE_C=keep_c is not None, HAS_DROP=drop is not None, BB=_BB,
                BH=max(16, triton.next_power_of_2(H)), num_warps=8 if H > 32 else 4,
            )
        else:
            out = graphs.run(_lstm_forward_loop, (xp, h0, c0, w_hh, ln_hw, ln_hb, ln_cw, ln_cb, peep, drop, keep_h,
                                                  keep_c), (eps, keep_from), T)
        A, G, C, TC, Hs, Cs, STG, STC = out
        ctx.save_for_backward(h0, c0, w_hh, ln_hw, ln_hb, ln_cw, ln_cb, peep, drop, keep_h, keep_c, Hs, xp)
        ctx.buffers, ctx.scalars = (A, G, C, TC, Cs, STG, STC), (eps, keep_from)
        ctx.keep_from = keep_from
        return Hs, Cs[T - 1].clone()

    @staticmethod
    def backward(ctx, dHs, dcT):
        h0, c0, w_hh, ln_hw, ln_hb, ln_cw, ln_cb, peep, drop, keep_h, keep_c, Hs, xp = ctx.saved_tensors
        if plain_backward_needed(dHs, dcT):  # double backward: autograd through the plain form
            inputs = (xp, h0, c0, w_hh, ln_hw, ln_hb, ln_cw, ln_cb, peep, drop, keep_h, keep_c)
            return differentiable_grads(_lstm_plain, ctx, inputs, ctx.scalars, (dHs, dcT))
        A, G, C, TC, Cs, STG, STC = ctx.buffers
        K, DA, DN, dh0, dc = graphs.run(
            _lstm_backward_loop, (dHs.contiguous(), dcT.contiguous(), h0, c0, w_hh, ln_hw, ln_cw, peep, drop, keep_h,
                                  keep_c, A, G, C, TC, Cs, STG, STC), (ctx.keep_from,), G.size(0))
        DA = K if DA is None else DA
        DN = C if DN is None else DN
        return (K, dh0, dc, *_weight_grads(ctx.needs_input_grad, h0, c0, Hs, A, C, Cs, STG, STC, K, DA, DN, drop,
                                           ln_hw, ln_cw, peep), None, None, None, None, None)


def _weight_grads(need, h0, c0, Hs, A, C, Cs, STG, STC, K, DA, DN, drop, ln_hw, ln_cw, peep):
    """Gradients of W_hh, the LN parameters and the peepholes, batched over time."""
    H = C.size(-1)
    hin = torch.cat([h0.unsqueeze(0), Hs[:-1]])  # (T, B, H)
    if drop is not None:
        hin = hin * drop
    d_w = DA.flatten(0, 1).t() @ hin.flatten(0, 1) if need[3] else None  # (4H, H)
    d_hw = d_hb = d_cw = d_cb = d_peep = None
    if ln_hw is not None:
        d_hw = (K * (A - STG[..., :1]) * STG[..., 1:]).sum((0, 1)) if need[4] else None
        d_hb = K.sum((0, 1)) if need[5] else None
    if ln_cw is not None:
        d_cw = (DN * (C - STC[..., :1]) * STC[..., 1:]).sum((0, 1)) if need[6] else None
        d_cb = DN.sum((0, 1)) if need[7] else None
    if peep is not None and need[8]:
        c_prev = torch.cat([c0.unsqueeze(0), Cs[:-1]])
        d_peep = torch.stack([(K[..., :H] * c_prev).sum((0, 1)), (K[..., H : 2 * H] * c_prev).sum((0, 1)),
                              (K[..., 3 * H :] * C).sum((0, 1))])  # (3, H)
    return d_w, d_hw, d_hb, d_cw, d_cb, d_peep


def _gru_forward_loop(xp, h0, w_hh, b_hh, ln_hw, drop, keep, eps, keep_from):
    """The GRU forward, one matmul and one fused kernel per step. Returns the matmul output ``A``
    ``(T, B, 3H)`` (with ``b_hh`` unless normalised), ``hh`` after the norm ``HH`` (LN; else None: it
    is ``A``), ``r, z`` ``RZ (T, B, 2H)``, candidate ``N`` and outputs ``Hs (T, B, H)``, LN stats ``ST``."""
    T, B, G3 = xp.shape
    H = G3 // 3
    A = take((T, B, G3), xp)
    HH = take((T, B, G3), xp) if ln_hw is not None else A
    RZ, N, Hs = take((T, B, 2 * H), xp), take((T, B, H), xp), take((T, B, H), xp)
    ST, hin = xp.new_empty(T, B, 2), xp.new_empty(B, H)
    w_t, block = w_hh.t(), triton.next_power_of_2(H)
    for t in range(T):
        h = h0 if t == 0 else Hs[t - 1]
        src = h if drop is None else (h0 * drop if t == 0 else hin)
        if ln_hw is not None or b_hh is None:
            torch.mm(src, w_t, out=A[t])
        else:
            torch.addmm(b_hh, src, w_t, out=A[t])
        zh = keep is not None and t >= keep_from
        kh = keep[t] if zh else None
        gru_forward_step[(B,)](
            A[t], xp[t], _or(ln_hw, xp), _or(b_hh, xp), h, _or(kh, xp), _or(drop, xp),
            RZ[t], N[t], HH[t], Hs[t], hin, ST[t], H, eps, *_strides(kh),
            LN_GATES=ln_hw is not None, ZONE_H=zh, HAS_DROP=drop is not None, BLOCK=block,
        )
    return A, (HH if ln_hw is not None else None), RZ, N, Hs, ST


def _gru_backward_loop(dHs, h0, w_hh, ln_hw, drop, keep, Hs, A, HH, RZ, N, ST, keep_from):
    """The GRU backward recurrence; returns ``(K, DA, dh0)``: the gradients of ``xp``, of the matmul
    output, and of ``h0``."""
    T, B, H = Hs.shape
    K, DA = take(A.shape, A), take(A.shape, A)
    base, mm, block = dHs[T - 1].clone(), None, triton.next_power_of_2(H)
    for t in range(T - 1, -1, -1):
        zh = keep is not None and t >= keep_from
        kh = keep[t] if zh else None
        nbase = torch.empty_like(base)
        gru_backward_step[(B,)](
            base, _or(mm, base), _or(drop, base), RZ[t], N[t], HH[t], (h0 if t == 0 else Hs[t - 1]),
            A[t], ST[t], _or(ln_hw, base), _or(kh, base), dHs[t - 1] if t > 0 else base, K[t], DA[t], nbase,
            H, *_strides(kh), LN_GATES=ln_hw is not None, ZONE_H=zh, HAS_DROP=mm is not None, HAS_DYP=t > 0,
            BLOCK=block,
        )
        if drop is not None:
            base, mm = nbase, DA[t] @ w_hh
        else:
            base = torch.addmm(nbase, DA[t], w_hh)
    return K, DA, (base if drop is None else base + mm * drop)


class _GRU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xp, h0, w_hh, b_hh, ln_hw, drop, keep, eps, keep_from):
        h0 = h0.contiguous()
        A, HH, RZ, N, Hs, ST = graphs.run(_gru_forward_loop, (xp, h0, w_hh, b_hh, ln_hw, drop, keep),
                                          (eps, keep_from), xp.size(0))
        HH = A if HH is None else HH
        ctx.save_for_backward(h0, w_hh, b_hh, ln_hw, drop, keep, Hs, xp)
        ctx.buffers, ctx.keep_from, ctx.scalars = (A, HH, RZ, N, ST), keep_from, (eps, keep_from)
        return Hs

    @staticmethod
    def backward(ctx, dHs):
        h0, w_hh, b_hh, ln_hw, drop, keep, Hs, xp = ctx.saved_tensors
        if plain_backward_needed(dHs):  # double backward: autograd through the plain form
            return differentiable_grads(gru_reference, ctx, (xp, h0, w_hh, b_hh, ln_hw, drop, keep), ctx.scalars,
                                        (dHs,))
        A, HH, RZ, N, ST = ctx.buffers
        T, B, H = Hs.shape
        K, DA, dh0 = graphs.run(_gru_backward_loop, (dHs.contiguous(), h0, w_hh, ln_hw, drop, keep, Hs, A, HH, RZ, N,
                                                     ST), (ctx.keep_from,), T)
        need = ctx.needs_input_grad
        hin = torch.cat([h0.unsqueeze(0), Hs[:-1]])  # (T, B, H)
        if drop is not None:
            hin = hin * drop
        d_w = DA.flatten(0, 1).t() @ hin.flatten(0, 1) if need[2] else None  # (3H, H)
        dhh = torch.cat([K[..., : 2 * H], K[..., 2 * H :] * RZ[..., :H]], dim=-1)  # d hh (after the norm)
        d_b = dhh.sum((0, 1)) if b_hh is not None and need[3] else None
        d_ln = (dhh * (A - ST[..., :1]) * ST[..., 1:]).sum((0, 1)) if ln_hw is not None and need[4] else None
        return K, dh0, d_w, d_b, d_ln, None, None, None, None
