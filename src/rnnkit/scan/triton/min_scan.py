"""minGRU/minLSTM's whole-sequence scan as fused Triton kernels (CUDA).

The cells' recurrence is ``h_t = a_t h_{t-1} + b_t`` with ``a = sigmoid(-d)``, ``b = sigmoid(d)
g(v)`` (:mod:`rnnkit.cells.minimal`; ``d = k`` for minGRU, ``d = softplus(-k_f) - softplus(-k_i)``
for minLSTM). In torch ops the coefficients, the scan, its backward and the chain rule back to the
projection are a dozen passes over ``(T, B, H)`` tensors and, on a GPU, hundreds of launches (the
chunked scan's steps): measured on an H200, 8.3 ms a training step at T=16,384, B8 H128, most of
it launch overhead. Here the coefficients are computed inside the scan kernels from ``x_proj``,
and the scan is chunked in time (Blelloch's two-level scan; the carry trick of Martin & Cundy,
"Parallelizing linear recurrent neural nets over sequence length", ICLR 2018):

1. every ``(chunk of CH steps) x (block of channels)`` tile scans itself from a zero state
   (``tl.associative_scan`` over ``(a, b)`` pairs) and writes its product of ``a`` and its end
   state;
2. one scan over the chunks (again ``tl.associative_scan``, all chunks in one tile) gives the
   state entering each chunk;
3. every tile rescans from its true start and writes ``h``.

The backward is the same three kernels run backwards in time over ``g_t = dL/dh_t + a_{t+1}
g_{t+1}`` (the gradient of a linear scan is a linear scan, Martin & Cundy sec. 3), with the last
kernel also applying the chain rule to ``x_proj``. Three launches each way, and ``x_proj`` is read
twice per direction.

Lengths: past a sequence's end the step is the identity (``a = 1, b = 0``), so ``h`` there keeps
the state at the end; the caller zeroes those outputs (:func:`rnnkit.scan.parallel.minimal_scan`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.scan.parallel import fused_min_scan_function
from rnnkit.scan.triton._lang import tl, triton
from rnnkit.scan.triton.helpers import rsum, sigmoid

__all__ = ["min_scan"]

#: channels (batch x hidden) per program, and warps per program
_BN = 32
_WARPS = 4
#: the most chunks the carry kernel scans in one tile; longer sequences get longer chunks. Measured on
#: an H200 (B8 H128, T=16,384, fwd+bwd of the kernels alone): 64-step chunks 0.97 ms, 32: 1.12, 16: 1.27
_MAX_CHUNKS = 256
#: elements of the carry kernel's tile at most (chunks x channels)
_CARRY_TILE = 4096


@triton.jit
def _combine(a1, b1, a2, b2):
    """``(a1, b1)`` then ``(a2, b2)``: ``h -> a2 (a1 h + b1) + b2``."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _softplus(x):
    return tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _coefficients(XP, t, n, live, B, H, G: tl.constexpr):
    """``(a, b, d, v)`` of the steps ``t (CH,)`` and channels ``n (BN,)``; ``(a, b) = (1, 0)`` where not
    ``live``."""
    row = n // H
    col = n % H
    off = (t[:, None] * B + row[None, :]) * (G * H) + col[None, :]  # (CH, BN) offsets of the first gate
    v = tl.load(XP + off + (G - 1) * H, mask=live, other=0.0)
    if G == 2:  # minGRU: d = k
        d = tl.load(XP + off, mask=live, other=0.0)
    else:  # minLSTM: d = softplus(-k_f) - softplus(-k_i)
        kf = tl.load(XP + off, mask=live, other=0.0)
        ki = tl.load(XP + off + H, mask=live, other=0.0)
        d = _softplus(-kf) - _softplus(-ki)
    s = sigmoid(d)
    gv = tl.where(v >= 0, v + 0.5, sigmoid(v))
    a = tl.where(live, 1.0 - s, 1.0)
    b = tl.where(live, s * gv, 0.0)
    return a, b, d, v, off


@triton.jit
def _live(t, n, LENS, T, B, H, HAS_LENS: tl.constexpr):
    """``(CH, BN)``: step ``t`` exists and lies inside channel ``n``'s sequence."""
    ok = (t[:, None] >= 0) & (t[:, None] < T) & (n[None, :] < B * H)
    if HAS_LENS:
        lens = tl.load(LENS + n // H, mask=n < B * H, other=0)
        ok = ok & (t[:, None] < lens[None, :])
    return ok


@triton.jit
def _last_row(x, CH: tl.constexpr):
    """Row ``CH - 1`` of a ``(CH, BN)`` tile."""
    r = tl.arange(0, CH)
    return rsum(tl.where(r[:, None] == CH - 1, x, 0.0), axis=0)


@triton.jit
def _forward_kernel(XP, LENS, START, P, S, HS, T, B, H, G: tl.constexpr, HAS_LENS: tl.constexpr,
                    FINAL: tl.constexpr, CH: tl.constexpr, BN: tl.constexpr):
    """Pass 1 (``FINAL`` false): the chunk's product of ``a`` and end state from zero, to ``P, S (K, N)``.
    Pass 3 (``FINAL``): ``h = A h_start + B`` for every step of the chunk, to ``HS (T, B, H)``."""
    n = tl.program_id(0) * BN + tl.arange(0, BN)
    k = tl.program_id(1)
    t = k * CH + tl.arange(0, CH)
    N = B * H
    live = _live(t, n, LENS, T, B, H, HAS_LENS)
    a, b, d, v, off = _coefficients(XP, t, n, live, B, H, G)
    acc_a, acc_b = tl.associative_scan((a, b), 0, _combine)
    if FINAL:
        start = tl.load(START + k * N + n, mask=n < N, other=0.0)
        h = acc_a * start[None, :] + acc_b
        inside = (t[:, None] < T) & (n[None, :] < N)
        tl.store(HS + t[:, None] * N + n[None, :], h, mask=inside)
    else:
        tl.store(P + k * N + n, _last_row(acc_a, CH), mask=n < N)
        tl.store(S + k * N + n, _last_row(acc_b, CH), mask=n < N)


@triton.jit
def _carry_kernel(P, S, H0, START, K, N, REVERSE: tl.constexpr, KP: tl.constexpr, BN: tl.constexpr):
    """The state entering each chunk: scan ``c_k = P_k c_{k-1} + S_k`` from ``H0`` over the ``K`` chunks
    (``REVERSE``: from the last chunk down), ``START[k]`` = the state before chunk ``k`` is applied."""
    n = tl.program_id(0) * BN + tl.arange(0, BN)
    r = tl.arange(0, KP)
    k = (K - 1 - r) if REVERSE else r  # scan order
    ok = (r[:, None] < K) & (n[None, :] < N)
    p = tl.load(P + k[:, None] * N + n[None, :], mask=ok, other=1.0)
    s = tl.load(S + k[:, None] * N + n[None, :], mask=ok, other=0.0)
    h0 = tl.load(H0 + n, mask=n < N, other=0.0)
    acc_p, acc_s = tl.associative_scan((p, s), 0, _combine)
    end = acc_p * h0[None, :] + acc_s  # state after chunk k (in scan order)
    nxt = (k - 1) if REVERSE else (k + 1)  # the chunk that this state enters
    tl.store(START + nxt[:, None] * N + n[None, :], end, mask=ok & (r[:, None] < K - 1))
    first = (K - 1) if REVERSE else 0
    tl.store(START + first * N + n, h0, mask=n < N)


@triton.jit
def _backward_kernel(XP, LENS, GY, HS, H0, START, P, S, DX, DH0, T, B, H, gy_st, gy_sb, gy_sh, G: tl.constexpr,
                     HAS_LENS: tl.constexpr, FINAL: tl.constexpr, CH: tl.constexpr, BN: tl.constexpr):
    """The adjoint scan ``g_t = gy_t + a_{t+1} g_{t+1}``, chunk by chunk backwards in time (rows run from
    the chunk's last step to its first). Pass 1 writes each chunk's product and local sum; pass 3
    (``FINAL``) adds the carry from the later chunks and writes ``dL/dx_proj`` and ``dL/dh0``."""
    n = tl.program_id(0) * BN + tl.arange(0, BN)
    k = tl.program_id(1)
    t = k * CH + (CH - 1) - tl.arange(0, CH)  # reversed time
    N = B * H
    inside = (t[:, None] < T) & (n[None, :] < N)
    nxt, _, _, _, _ = _coefficients(XP, t + 1, n, _live(t + 1, n, LENS, T, B, H, HAS_LENS), B, H, G)
    c = tl.where(t[:, None] + 1 < T, nxt, 0.0)  # a_{t+1}; none after the last step
    gy_off = t[:, None] * gy_st + (n // H)[None, :] * gy_sb + (n % H)[None, :] * gy_sh  # any strides (an expand)
    gy = tl.load(GY + gy_off, mask=inside, other=0.0)
    acc_c, acc_g = tl.associative_scan((c, gy), 0, _combine)
    if FINAL:
        carry = tl.load(START + k * N + n, mask=n < N, other=0.0)  # g at the first step of chunk k + 1
        g = acc_c * carry[None, :] + acc_g  # total dL/dh_t
        live = _live(t, n, LENS, T, B, H, HAS_LENS)
        a, b, d, v, off = _coefficients(XP, t, n, live, B, H, G)
        h0 = tl.load(H0 + n, mask=n < N, other=0.0)
        prev = tl.load(HS + (t[:, None] - 1) * N + n[None, :], mask=inside & (t[:, None] > 0), other=0.0)
        prev = tl.where(t[:, None] == 0, h0[None, :], prev)  # h_{t-1}
        s = 1.0 - a
        gv = tl.where(v >= 0, v + 0.5, sigmoid(v))
        sv = sigmoid(v)
        dgv = tl.where(v >= 0, 1.0, sv * (1.0 - sv))
        dd = tl.where(live, g * s * (1.0 - s) * (gv - prev), 0.0)  # d a/dd = -s(1-s), d b/dd = s(1-s) g(v)
        dv = tl.where(live, g * s * dgv, 0.0)
        tl.store(DX + off + (G - 1) * H, dv, mask=inside)
        if G == 2:
            tl.store(DX + off, dd, mask=inside)
        else:
            kf = tl.load(XP + off, mask=live, other=0.0)
            ki = tl.load(XP + off + H, mask=live, other=0.0)
            tl.store(DX + off, -sigmoid(-kf) * dd, mask=inside)
            tl.store(DX + off + H, sigmoid(-ki) * dd, mask=inside)
        if k == 0:  # dL/dh0 = a_0 g_0
            tl.store(DH0 + n, rsum(tl.where((t[:, None] == 0) & inside, a * g, 0.0), axis=0), mask=n < N)
    else:
        tl.store(P + k * N + n, _last_row(acc_c, CH), mask=n < N)
        tl.store(S + k * N + n, _last_row(acc_g, CH), mask=n < N)


def _chunk(steps: int) -> tuple[int, int]:
    """Steps per chunk (a power of two, >= 16) and the number of chunks, at most ``_MAX_CHUNKS`` (more
    only when a chunk would exceed 4,096 steps)."""
    ch = min(4096, max(16, triton.next_power_of_2(-(-steps // _MAX_CHUNKS))))
    ch = min(ch, max(16, triton.next_power_of_2(steps)))
    return ch, -(-steps // ch)


def _scan(kernel, extra, n, ch, k, h0, reverse, like, **flags):
    """Passes 1-3 of one direction; ``extra`` are the kernel's leading arguments."""
    p, s = like.new_empty(k, n), like.new_empty(k, n)
    start = like.new_empty(k, n)
    grid = (triton.cdiv(n, _BN), k)
    kernel[grid](*extra(start, p, s), FINAL=False, CH=ch, BN=_BN, num_warps=_WARPS, **flags)
    kp = max(16, triton.next_power_of_2(k))
    bn = min(_BN, max(1, _CARRY_TILE // kp))  # keep the (chunks x channels) tile small: its scan uses shared memory
    _carry_kernel[(triton.cdiv(n, bn),)](p, s, h0, start, k, n, REVERSE=reverse, KP=kp, BN=bn, num_warps=_WARPS)
    kernel[grid](*extra(start, p, s), FINAL=True, CH=ch, BN=_BN, num_warps=_WARPS, **flags)


def _forward(x_proj: Tensor, h0: Tensor, lens: Tensor | None, gates: int) -> Tensor:
    T, B, _ = x_proj.shape
    H = h0.size(-1)
    n = B * H
    ch, k = _chunk(T)
    hs = x_proj.new_empty(T, B, H)
    lens_arg = lens if lens is not None else x_proj  # a pointer the kernel never reads

    def args(start, p, s):
        return (x_proj, lens_arg, start, p, s, hs, T, B, H)

    _scan(_forward_kernel, args, n, ch, k, h0.reshape(n), False, x_proj, G=gates, HAS_LENS=lens is not None)
    return hs


def _backward(x_proj: Tensor, h0: Tensor, hs: Tensor, gy: Tensor, lens: Tensor | None,
              gates: int) -> tuple[Tensor, Tensor]:
    T, B, _ = x_proj.shape
    H = h0.size(-1)
    n = B * H
    ch, k = _chunk(T)
    dx, dh0 = torch.empty_like(x_proj), torch.empty_like(h0)
    lens_arg = lens if lens is not None else x_proj

    def args(start, p, s):
        return (x_proj, lens_arg, gy, hs, h0, start, p, s, dx, dh0, T, B, H, *gy.stride())

    _scan(_backward_kernel, args, n, ch, k, h0.new_zeros(n), True, x_proj, G=gates, HAS_LENS=lens is not None)
    return dx, dh0


_MinScan = fused_min_scan_function("_MinScan", _forward, _backward)


def min_scan(x_proj: Tensor, h0: Tensor, lengths: Tensor | None, gates: int) -> Tensor:
    """``h (T, B, H)`` of minGRU (``gates=2``, ``x_proj (T, B, 2H)`` = k, v) or minLSTM (``gates=3``:
    k_f, k_i, v) from ``h0 (B, H)``; past a sequence's end ``h`` keeps the state at its end."""
    lens = None if lengths is None else lengths.to(device=x_proj.device, dtype=torch.int32).contiguous()
    return _MinScan.apply(x_proj, h0, lens, gates)
