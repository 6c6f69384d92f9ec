"""A persistent LSTM forward kernel: one launch runs the whole sequence, with ``W_hh`` loaded into
registers once and ``h``, ``c`` kept in registers from step to step (the idea of Diamos et al.,
"Persistent RNNs", ICML 2016, and of cuDNN's persistent kernels).

Each program owns a tile of ``BB`` batch rows; rows never interact, so programs need no grid-wide
synchronisation (cuDNN's persistent kernels instead split the hidden units across blocks and sync
the grid every step). The price: the 4 x H x H recurrent weights must fit in one program's
registers, so the kernel is used for ``H <= PERSISTENT_MAX_H`` (64: 16K fp32 values over 256
threads); larger layers use the per-step kernels. The step's math is :mod:`.lstm_kernels`' (and so
:mod:`rnnkit.scan.fast.lstm`'s); it writes every buffer their backward reads.
"""

from __future__ import annotations

from rnnkit.scan.triton._lang import tl, triton
from rnnkit.scan.triton.helpers import rsum, sigmoid, tanh

__all__ = ["PERSISTENT_MAX_H", "lstm_persistent_forward"]

#: the largest hidden size whose recurrent weights the kernel keeps in registers
PERSISTENT_MAX_H = 64


@triton.jit
def _gate(W, k, kk, j, H, wmask):
    """``W_hh[k*H:(k+1)*H].T`` as a ``(BH, BH)`` tile (inputs x units), zero-padded."""
    return tl.load(W + (k * H + j[None, :]) * H + kk[:, None], mask=wmask, other=0.0)


@triton.jit
def _tile(P, rows, cols, H, m2):
    return tl.load(P + rows[:, None] * H + cols[None, :], mask=m2, other=0.0)


@triton.jit
def lstm_persistent_forward(
    XP, W, H0, C0, LNW, LNB, CW, CB, PEEP, KH, KC, DROP,
    A, G, C, TC, HS, CS, STG, STC,
    T, B, H, eps, keep_from, kh_st, kh_sb, kh_sh, kc_st, kc_sb, kc_sh,
    LN_GATES: tl.constexpr, LN_CELL: tl.constexpr, HAS_PEEP: tl.constexpr, ZONE_H: tl.constexpr,
    ZONE_C: tl.constexpr, HAS_DROP: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr,
):
    """Buffers are ``(T, B, 4H)`` (``XP``, ``A``: raw ``h W_hh^T`` when LN_GATES, ``G``) or
    ``(T, B, H)``, contiguous; ``STG``/``STC`` hold LN ``(mean, rstd)`` per row and step."""
    rows = tl.program_id(0) * BB + tl.arange(0, BB)
    cols = tl.arange(0, BH)
    rmask, cmask = rows < B, cols < H
    m2 = rmask[:, None] & cmask[None, :]
    kk = tl.arange(0, BH)
    wmask = (kk[:, None] < H) & cmask[None, :]
    w_i, w_f = _gate(W, 0, kk, cols, H, wmask), _gate(W, 1, kk, cols, H, wmask)  # held for all T steps
    w_g, w_o = _gate(W, 2, kk, cols, H, wmask), _gate(W, 3, kk, cols, H, wmask)
    h = _tile(H0, rows, cols, H, m2)
    c = _tile(C0, rows, cols, H, m2)
    drop = _tile(DROP, rows, cols, H, m2)  # a dummy pointer when not HAS_DROP: read, never used
    H4 = 4 * H
    for t in range(T):
        hin = h
        if HAS_DROP:
            hin = h * drop
        a_i = tl.dot(hin, w_i, input_precision="ieee")  # (BB, BH)
        a_f = tl.dot(hin, w_f, input_precision="ieee")
        a_g = tl.dot(hin, w_g, input_precision="ieee")
        a_o = tl.dot(hin, w_o, input_precision="ieee")
        row4 = (t * B + rows[:, None]) * H4 + cols[None, :]  # offsets of block 0 in (T, B, 4H)
        row1 = (t * B + rows[:, None]) * H + cols[None, :]  # offsets in (T, B, H)
        if LN_GATES:
            tl.store(A + row4, a_i, mask=m2)
            tl.store(A + row4 + H, a_f, mask=m2)
            tl.store(A + row4 + 2 * H, a_g, mask=m2)
            tl.store(A + row4 + 3 * H, a_o, mask=m2)
            mean = rsum(tl.where(m2, a_i + a_f + a_g + a_o, 0.0), axis=1) / H4
            d_i, d_f = tl.where(m2, a_i - mean[:, None], 0.0), tl.where(m2, a_f - mean[:, None], 0.0)
            d_g, d_o = tl.where(m2, a_g - mean[:, None], 0.0), tl.where(m2, a_o - mean[:, None], 0.0)
            rstd = 1.0 / tl.sqrt(rsum(d_i * d_i + d_f * d_f + d_g * d_g + d_o * d_o, axis=1) / H4 + eps)
            tl.store(STG + 2 * (t * B + rows), mean, mask=rmask)
            tl.store(STG + 2 * (t * B + rows) + 1, rstd, mask=rmask)
            a_i = d_i * rstd[:, None] * tl.load(LNW + cols, mask=cmask, other=0.0)[None, :]
            a_f = d_f * rstd[:, None] * tl.load(LNW + H + cols, mask=cmask, other=0.0)[None, :]
            a_g = d_g * rstd[:, None] * tl.load(LNW + 2 * H + cols, mask=cmask, other=0.0)[None, :]
            a_o = d_o * rstd[:, None] * tl.load(LNW + 3 * H + cols, mask=cmask, other=0.0)[None, :]
            a_i += tl.load(LNB + cols, mask=cmask, other=0.0)[None, :]
            a_f += tl.load(LNB + H + cols, mask=cmask, other=0.0)[None, :]
            a_g += tl.load(LNB + 2 * H + cols, mask=cmask, other=0.0)[None, :]
            a_o += tl.load(LNB + 3 * H + cols, mask=cmask, other=0.0)[None, :]
        a_i += tl.load(XP + row4, mask=m2, other=0.0)
        a_f += tl.load(XP + row4 + H, mask=m2, other=0.0)
        a_g += tl.load(XP + row4 + 2 * H, mask=m2, other=0.0)
        a_o += tl.load(XP + row4 + 3 * H, mask=m2, other=0.0)
        if HAS_PEEP:
            a_i += tl.load(PEEP + cols, mask=cmask, other=0.0)[None, :] * c
            a_f += tl.load(PEEP + H + cols, mask=cmask, other=0.0)[None, :] * c
        i, f, g = sigmoid(a_i), sigmoid(a_f), tanh(a_g)
        c_new = f * c + i * g
        if HAS_PEEP:
            a_o += tl.load(PEEP + 2 * H + cols, mask=cmask, other=0.0)[None, :] * c_new
        o = sigmoid(a_o)
        n = c_new
        if LN_CELL:
            mean_c = rsum(tl.where(m2, c_new, 0.0), axis=1) / H
            d = tl.where(m2, c_new - mean_c[:, None], 0.0)
            rstd_c = 1.0 / tl.sqrt(rsum(d * d, axis=1) / H + eps)
            tl.store(STC + 2 * (t * B + rows), mean_c, mask=rmask)
            tl.store(STC + 2 * (t * B + rows) + 1, rstd_c, mask=rmask)
            n = d * rstd_c[:, None] * tl.load(CW + cols, mask=cmask, other=0.0)[None, :]
            n += tl.load(CB + cols, mask=cmask, other=0.0)[None, :]
        tc = tanh(n)
        h_new = o * tc
        tl.store(G + row4, i, mask=m2)
        tl.store(G + row4 + H, f, mask=m2)
        tl.store(G + row4 + 2 * H, g, mask=m2)
        tl.store(G + row4 + 3 * H, o, mask=m2)
        tl.store(C + row1, c_new, mask=m2)
        tl.store(TC + row1, tc, mask=m2)
        on = tl.where(t >= keep_from, 1.0, 0.0)  # keep factors apply from step keep_from on
        if ZONE_H:
            kh = tl.load(KH + t * kh_st + rows[:, None] * kh_sb + cols[None, :] * kh_sh, mask=m2, other=0.0)
            h_new = h_new + on * kh * (h - h_new)
        if ZONE_C:
            kc = tl.load(KC + t * kc_st + rows[:, None] * kc_sb + cols[None, :] * kc_sh, mask=m2, other=0.0)
            c_new = c_new + on * kc * (c - c_new)
        tl.store(HS + row1, h_new, mask=m2)
        tl.store(CS + row1, c_new, mask=m2)
        h = tl.where(m2, h_new, 0.0)
        c = tl.where(m2, c_new, 0.0)
