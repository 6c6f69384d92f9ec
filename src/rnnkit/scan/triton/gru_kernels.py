"""Triton kernels for one GRU step (torch's formulation, gate order r, z, n): the step's elementwise
work (recurrent layer norm, activations, zoneout, dropout) in one launch forward and one backward;
the matmul stays with cuBLAS. One program per batch row. The math is :mod:`rnnkit.scan.fast.gru`'s.
"""

from __future__ import annotations

from rnnkit.scan.triton._lang import tl, triton
from rnnkit.scan.triton.helpers import norm3, rsum, sigmoid, tanh

__all__ = ["gru_backward_step", "gru_forward_step"]


@triton.jit
def gru_forward_step(
    A, XP, LNW, LNB, H0, KH, DROP,
    RZ, N, HH, HS, HIN, ST,
    H, eps, kh_sb, kh_sh,
    LN_GATES: tl.constexpr, ZONE_H: tl.constexpr, HAS_DROP: tl.constexpr, BLOCK: tl.constexpr,
):
    """``A (B, 3H)``: ``(h * m) W_hh^T`` (LN_GATES; normalised, then ``* LNW + LNB``) or already
    ``hh = (h * m) W_hh^T + b_hh``. Writes ``r, z`` (``RZ``), ``n`` (``N``), the normalised ``hh``
    (``HH``, LN_GATES), ``h_t`` (``HS``), ``h_t * m`` (``HIN``) and LN stats ``(mean, rstd)``."""
    b = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    m = offs < H
    row3, row = b * 3 * H, b * H
    hh_r = tl.load(A + row3 + offs, mask=m, other=0.0)
    hh_z = tl.load(A + row3 + H + offs, mask=m, other=0.0)
    hh_n = tl.load(A + row3 + 2 * H + offs, mask=m, other=0.0)
    if LN_GATES:
        mean, rstd = norm3(hh_r, hh_z, hh_n, m, 3 * H, eps)
        tl.store(ST + 2 * b, mean)
        tl.store(ST + 2 * b + 1, rstd)
        hh_r = (hh_r - mean) * rstd * tl.load(LNW + offs, mask=m) + tl.load(LNB + offs, mask=m)
        hh_z = (hh_z - mean) * rstd * tl.load(LNW + H + offs, mask=m) + tl.load(LNB + H + offs, mask=m)
        hh_n = (hh_n - mean) * rstd * tl.load(LNW + 2 * H + offs, mask=m) + tl.load(LNB + 2 * H + offs, mask=m)
        tl.store(HH + row3 + offs, hh_r, mask=m)
        tl.store(HH + row3 + H + offs, hh_z, mask=m)
        tl.store(HH + row3 + 2 * H + offs, hh_n, mask=m)
    r = sigmoid(tl.load(XP + row3 + offs, mask=m, other=0.0) + hh_r)
    z = sigmoid(tl.load(XP + row3 + H + offs, mask=m, other=0.0) + hh_z)
    n = tanh(tl.load(XP + row3 + 2 * H + offs, mask=m, other=0.0) + r * hh_n)
    h0 = tl.load(H0 + row + offs, mask=m, other=0.0)
    h = n + z * (h0 - n)  # (1 - z) n + z h
    if ZONE_H:
        kh = tl.load(KH + b * kh_sb + offs * kh_sh, mask=m, other=0.0)
        h = h + kh * (h0 - h)
    tl.store(RZ + 2 * row + offs, r, mask=m)
    tl.store(RZ + 2 * row + H + offs, z, mask=m)
    tl.store(N + row + offs, n, mask=m)
    tl.store(HS + row + offs, h, mask=m)
    if HAS_DROP:
        tl.store(HIN + row + offs, h * tl.load(DROP + row + offs, mask=m, other=0.0), mask=m)


@triton.jit
def gru_backward_step(
    BASE, MM, DROP, RZ, N, HH, H0, A, ST, LNW, KH, DYP,
    K, DA, NBASE,
    H, kh_sb, kh_sh,
    LN_GATES: tl.constexpr, ZONE_H: tl.constexpr, HAS_DROP: tl.constexpr, HAS_DYP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Step t backward. ``dh_t = BASE + MM * m`` (``MM = da_{t+1} W_hh`` when dropping). Writes
    ``dxp`` (``K``), the recurrent matmul's output gradient ``DA`` and
    ``NBASE = dY_{t-1} + z dh~_t + d_h dh_t``."""
    b = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    m = offs < H
    row3, row = b * 3 * H, b * H
    dh = tl.load(BASE + row + offs, mask=m, other=0.0)
    if HAS_DROP:
        dh += tl.load(MM + row + offs, mask=m, other=0.0) * tl.load(DROP + row + offs, mask=m, other=0.0)
    dht = dh
    if ZONE_H:
        kh = tl.load(KH + b * kh_sb + offs * kh_sh, mask=m, other=0.0)
        dht = dh * (1.0 - kh)
    r = tl.load(RZ + 2 * row + offs, mask=m, other=0.0)
    z = tl.load(RZ + 2 * row + H + offs, mask=m, other=0.0)
    n = tl.load(N + row + offs, mask=m, other=0.0)
    h0 = tl.load(H0 + row + offs, mask=m, other=0.0)
    hh_n = tl.load(HH + row3 + 2 * H + offs, mask=m, other=0.0)
    dpre_n = dht * (1.0 - z) * (1.0 - n * n)
    dpre_z = dht * (h0 - n) * z * (1.0 - z)
    dhh_n = dpre_n * r
    dpre_r = dhh_n * hh_n * (1.0 - r)
    tl.store(K + row3 + offs, dpre_r, mask=m)
    tl.store(K + row3 + H + offs, dpre_z, mask=m)
    tl.store(K + row3 + 2 * H + offs, dpre_n, mask=m)
    if LN_GATES:  # da = LN'(dhh) over all 3H
        mean, rstd = tl.load(ST + 2 * b), tl.load(ST + 2 * b + 1)
        h_r = tl.where(m, (tl.load(A + row3 + offs, mask=m, other=0.0) - mean) * rstd, 0.0)
        h_z = tl.where(m, (tl.load(A + row3 + H + offs, mask=m, other=0.0) - mean) * rstd, 0.0)
        h_n = tl.where(m, (tl.load(A + row3 + 2 * H + offs, mask=m, other=0.0) - mean) * rstd, 0.0)
        y_r = tl.where(m, dpre_r * tl.load(LNW + offs, mask=m, other=0.0), 0.0)
        y_z = tl.where(m, dpre_z * tl.load(LNW + H + offs, mask=m, other=0.0), 0.0)
        y_n = tl.where(m, dhh_n * tl.load(LNW + 2 * H + offs, mask=m, other=0.0), 0.0)
        mean_y = rsum(y_r + y_z + y_n, axis=0) / (3 * H)
        mean_yh = rsum(y_r * h_r + y_z * h_z + y_n * h_n, axis=0) / (3 * H)
        tl.store(DA + row3 + offs, rstd * (y_r - mean_y - h_r * mean_yh), mask=m)
        tl.store(DA + row3 + H + offs, rstd * (y_z - mean_y - h_z * mean_yh), mask=m)
        tl.store(DA + row3 + 2 * H + offs, rstd * (y_n - mean_y - h_n * mean_yh), mask=m)
    else:
        tl.store(DA + row3 + offs, dpre_r, mask=m)
        tl.store(DA + row3 + H + offs, dpre_z, mask=m)
        tl.store(DA + row3 + 2 * H + offs, dhh_n, mask=m)
    nbase = dht * z
    if HAS_DYP:
        nbase += tl.load(DYP + row + offs, mask=m, other=0.0)
    if ZONE_H:
        nbase += kh * dh
    tl.store(NBASE + row + offs, nbase, mask=m)
