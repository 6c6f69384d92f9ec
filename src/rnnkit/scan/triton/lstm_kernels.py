"""Triton kernels for one LSTM step: all of a step's elementwise work (layer norms, activations,
peepholes, zoneout, dropout) in one launch forward and one backward; the step's matmul stays with
cuBLAS. One program per batch row, the row's 4H gates in one block (``BLOCK >= H``).

The math is :mod:`rnnkit.scan.fast.lstm`'s (which is the reference cell's); symbols and gate order
(i, f, g, o) as there.
Keep factors are read through strides so that ``(B, S)``, ``(B, 1)`` and ``(1, 1)`` rows all work.
"""

from __future__ import annotations

from rnnkit.scan.triton._lang import tl, triton
from rnnkit.scan.triton.helpers import norm1, norm4, rsum, sigmoid, tanh

__all__ = ["lstm_backward_step", "lstm_forward_step"]


@triton.jit
def lstm_forward_step(
    A, XP, LNW, LNB, C0, H0, PEEP, CW, CB, KH, KC, DROP,
    G, C, TC, HS, CS, HIN, STG, STC,
    H, eps, kh_sb, kh_sh, kc_sb, kc_sh,
    LN_GATES: tl.constexpr, LN_CELL: tl.constexpr, HAS_PEEP: tl.constexpr, ZONE_H: tl.constexpr,
    ZONE_C: tl.constexpr, HAS_DROP: tl.constexpr, BLOCK: tl.constexpr,
):
    """``A (B, 4H)``: ``h W_hh^T`` (LN_GATES; ``XP`` is then added after the norm) or the whole
    pre-activation. Writes gates ``G``, ``c~`` (``C``), ``tanh(n)`` (``TC``), ``h_t`` (``HS``),
    ``c_t`` (``CS``, when zoned), ``h_t * m`` (``HIN``, when dropping), LN stats ``(mean, rstd)``."""
    b = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    m = offs < H
    row4, row = b * 4 * H, b * H
    a_i = tl.load(A + row4 + offs, mask=m, other=0.0)
    a_f = tl.load(A + row4 + H + offs, mask=m, other=0.0)
    a_g = tl.load(A + row4 + 2 * H + offs, mask=m, other=0.0)
    a_o = tl.load(A + row4 + 3 * H + offs, mask=m, other=0.0)
    if LN_GATES:
        mean, rstd = norm4(a_i, a_f, a_g, a_o, m, 4 * H, eps)
        tl.store(STG + 2 * b, mean)
        tl.store(STG + 2 * b + 1, rstd)
        a_i = (a_i - mean) * rstd * tl.load(LNW + offs, mask=m) + tl.load(LNB + offs, mask=m)
        a_f = (a_f - mean) * rstd * tl.load(LNW + H + offs, mask=m) + tl.load(LNB + H + offs, mask=m)
        a_g = (a_g - mean) * rstd * tl.load(LNW + 2 * H + offs, mask=m) + tl.load(LNB + 2 * H + offs, mask=m)
        a_o = (a_o - mean) * rstd * tl.load(LNW + 3 * H + offs, mask=m) + tl.load(LNB + 3 * H + offs, mask=m)
        a_i += tl.load(XP + row4 + offs, mask=m, other=0.0)
        a_f += tl.load(XP + row4 + H + offs, mask=m, other=0.0)
        a_g += tl.load(XP + row4 + 2 * H + offs, mask=m, other=0.0)
        a_o += tl.load(XP + row4 + 3 * H + offs, mask=m, other=0.0)
    c0 = tl.load(C0 + row + offs, mask=m, other=0.0)
    if HAS_PEEP:
        a_i += tl.load(PEEP + offs, mask=m) * c0
        a_f += tl.load(PEEP + H + offs, mask=m) * c0
    i = sigmoid(a_i)
    f = sigmoid(a_f)
    g = tanh(a_g)
    c = f * c0 + i * g
    if HAS_PEEP:
        a_o += tl.load(PEEP + 2 * H + offs, mask=m) * c
    o = sigmoid(a_o)
    n = c
    if LN_CELL:
        mean_c, rstd_c = norm1(c, m, H, eps)
        tl.store(STC + 2 * b, mean_c)
        tl.store(STC + 2 * b + 1, rstd_c)
        n = (c - mean_c) * rstd_c * tl.load(CW + offs, mask=m) + tl.load(CB + offs, mask=m)
    tc = tanh(n)
    h = o * tc
    tl.store(G + row4 + offs, i, mask=m)
    tl.store(G + row4 + H + offs, f, mask=m)
    tl.store(G + row4 + 2 * H + offs, g, mask=m)
    tl.store(G + row4 + 3 * H + offs, o, mask=m)
    tl.store(C + row + offs, c, mask=m)
    tl.store(TC + row + offs, tc, mask=m)
    if ZONE_H:
        kh = tl.load(KH + b * kh_sb + offs * kh_sh, mask=m, other=0.0)
        h = h + kh * (tl.load(H0 + row + offs, mask=m, other=0.0) - h)
    if ZONE_C:
        kc = tl.load(KC + b * kc_sb + offs * kc_sh, mask=m, other=0.0)
        c = c + kc * (c0 - c)
    tl.store(CS + row + offs, c, mask=m)
    tl.store(HS + row + offs, h, mask=m)
    if HAS_DROP:
        tl.store(HIN + row + offs, h * tl.load(DROP + row + offs, mask=m, other=0.0), mask=m)


@triton.jit
def lstm_backward_step(
    BASE, MM, DROP, DC, G, C, TC, CP, A, STG, LNW, STC, CW, PEEP, KH, KC, DYP,
    K, DA, DN, DCP, NBASE,
    H, kh_sb, kh_sh, kc_sb, kc_sh,
    LN_GATES: tl.constexpr, LN_CELL: tl.constexpr, HAS_PEEP: tl.constexpr, ZONE_H: tl.constexpr,
    ZONE_C: tl.constexpr, HAS_DROP: tl.constexpr, HAS_DYP: tl.constexpr, BLOCK: tl.constexpr,
):
    """Step t backward. ``dh_t = BASE + MM * m`` (``MM = da_{t+1} W_hh`` when dropping; else it is
    in ``BASE`` already), ``dc_t = DC``. Writes ``dpre`` (``K``, the gradient of ``xp``), the
    recurrent matmul's output gradient ``DA`` (LN_GATES; else it is ``K``), ``dn`` (``DN``,
    LN_CELL), ``dc_{t-1}`` (``DCP``) and ``NBASE = dY_{t-1} + d_h * dh_t`` for the step before."""
    b = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    m = offs < H
    row4, row = b * 4 * H, b * H
    dh = tl.load(BASE + row + offs, mask=m, other=0.0)
    if HAS_DROP:
        dh += tl.load(MM + row + offs, mask=m, other=0.0) * tl.load(DROP + row + offs, mask=m, other=0.0)
    dc = tl.load(DC + row + offs, mask=m, other=0.0)
    dht, dct = dh, dc
    if ZONE_H:
        kh = tl.load(KH + b * kh_sb + offs * kh_sh, mask=m, other=0.0)
        dht = dh * (1.0 - kh)
    if ZONE_C:
        kc = tl.load(KC + b * kc_sb + offs * kc_sh, mask=m, other=0.0)
        dct = dc * (1.0 - kc)
    i = tl.load(G + row4 + offs, mask=m, other=0.0)
    f = tl.load(G + row4 + H + offs, mask=m, other=0.0)
    g = tl.load(G + row4 + 2 * H + offs, mask=m, other=0.0)
    o = tl.load(G + row4 + 3 * H + offs, mask=m, other=0.0)
    tc = tl.load(TC + row + offs, mask=m, other=0.0)
    c = tl.load(C + row + offs, mask=m, other=0.0)
    cp = tl.load(CP + row + offs, mask=m, other=0.0)
    dpre_o = dht * tc * o * (1.0 - o)
    dn = dht * o * (1.0 - tc * tc)
    if LN_CELL:
        tl.store(DN + row + offs, dn, mask=m)
        mean_c, rstd_c = tl.load(STC + 2 * b), tl.load(STC + 2 * b + 1)
        c_hat = tl.where(m, (c - mean_c) * rstd_c, 0.0)
        dy = tl.where(m, dn * tl.load(CW + offs, mask=m, other=0.0), 0.0)
        dn = rstd_c * (dy - rsum(dy, axis=0) / H - c_hat * (rsum(dy * c_hat, axis=0) / H))
    dct += dn
    if HAS_PEEP:
        p_i = tl.load(PEEP + offs, mask=m, other=0.0)
        p_f = tl.load(PEEP + H + offs, mask=m, other=0.0)
        dct += tl.load(PEEP + 2 * H + offs, mask=m, other=0.0) * dpre_o
    dpre_i = dct * g * i * (1.0 - i)
    dpre_f = dct * cp * f * (1.0 - f)
    dpre_g = dct * i * (1.0 - g * g)
    dcp = dct * f
    if HAS_PEEP:
        dcp += p_i * dpre_i + p_f * dpre_f
    if ZONE_C:
        dcp += kc * dc
    tl.store(DCP + row + offs, dcp, mask=m)
    tl.store(K + row4 + offs, dpre_i, mask=m)
    tl.store(K + row4 + H + offs, dpre_f, mask=m)
    tl.store(K + row4 + 2 * H + offs, dpre_g, mask=m)
    tl.store(K + row4 + 3 * H + offs, dpre_o, mask=m)
    if LN_GATES:  # da = LN'(dpre) over all 4H
        mean, rstd = tl.load(STG + 2 * b), tl.load(STG + 2 * b + 1)
        h_i = tl.where(m, (tl.load(A + row4 + offs, mask=m, other=0.0) - mean) * rstd, 0.0)
        h_f = tl.where(m, (tl.load(A + row4 + H + offs, mask=m, other=0.0) - mean) * rstd, 0.0)
        h_g = tl.where(m, (tl.load(A + row4 + 2 * H + offs, mask=m, other=0.0) - mean) * rstd, 0.0)
        h_o = tl.where(m, (tl.load(A + row4 + 3 * H + offs, mask=m, other=0.0) - mean) * rstd, 0.0)
        y_i = tl.where(m, dpre_i * tl.load(LNW + offs, mask=m, other=0.0), 0.0)
        y_f = tl.where(m, dpre_f * tl.load(LNW + H + offs, mask=m, other=0.0), 0.0)
        y_g = tl.where(m, dpre_g * tl.load(LNW + 2 * H + offs, mask=m, other=0.0), 0.0)
        y_o = tl.where(m, dpre_o * tl.load(LNW + 3 * H + offs, mask=m, other=0.0), 0.0)
        mean_y = rsum(y_i + y_f + y_g + y_o, axis=0) / (4 * H)
        mean_yh = rsum(y_i * h_i + y_f * h_f + y_g * h_g + y_o * h_o, axis=0) / (4 * H)
        tl.store(DA + row4 + offs, rstd * (y_i - mean_y - h_i * mean_yh), mask=m)
        tl.store(DA + row4 + H + offs, rstd * (y_f - mean_y - h_f * mean_yh), mask=m)
        tl.store(DA + row4 + 2 * H + offs, rstd * (y_g - mean_y - h_g * mean_yh), mask=m)
        tl.store(DA + row4 + 3 * H + offs, rstd * (y_o - mean_y - h_o * mean_yh), mask=m)
    nbase = dh * 0.0
    if HAS_DYP:
        nbase = tl.load(DYP + row + offs, mask=m, other=0.0)
    if ZONE_H:
        nbase += kh * dh
    tl.store(NBASE + row + offs, nbase, mask=m)
