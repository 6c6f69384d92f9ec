"""Parallel-in-time scans for diagonal linear recurrences.

    h_t = a_t * h_{t-1} + b_t,     t = 0 .. T-1,   h_{-1} = h0          (elementwise)

This is the recurrence of minGRU/minLSTM (gates depend on the input only) and of each Newton
step of quasi-DEER (:mod:`rnnkit.scan.deer`). Three pure functions, all time-major:

* :func:`heinsen_scan` -- the log-space scan of Heinsen, "Efficient parallelization of a
  ubiquitous sequential computation" (2023), as used in the appendix of Feng et al., "Were RNNs
  All We Needed?" (2024): ``a* = cumsum(log a)``, ``h = exp(a* + logcumsumexp(log b - a*))``.
  Needs ``a, b > 0``. Short and faithful; its float32 error grows with ``|a*_t|`` (0.6% at
  T = 65,536 with ``log a ~ U(-1.4, 0)``), so it is the reference, not what the cells run.
* :func:`log_scan` -- the same log-space formulation, chunked: Heinsen's scan inside chunks of
  ``chunk`` steps (so the log prefix sums stay small), and :func:`linear_scan` to carry the
  state across chunks. Accurate for any T; what minGRU/minLSTM use with ``scan="log"``.
* :func:`linear_scan` -- any real ``a`` (negative or zero too), no logarithms. A chunked scan:
  with ``C ~ sqrt(T)`` steps per chunk, (1) every chunk runs from a zero state at once, giving
  its end state ``s_k`` and the product ``p_k`` of its ``a``'s; (2) the chunk carries
  ``c_k = p_k * c_{k-1} + s_k`` are the same recurrence on ``T / C`` steps (solved recursively);
  (3) every chunk reruns from its true start state. O(T) work (three passes), O(sqrt T)
  sequential steps, each over all chunks at once. Its backward is one more scan of the same
  kind, run backwards in time with the coefficients shifted by one (``g_t = dL/dh_t + a_{t+1}
  g_{t+1}``), so autograd keeps no per-step graph. It is the custom op ``rnnkit::linear_scan``
  (fake kernel; autograd written with the op itself, so double backward works), and compile and
  export see one node; torch.func transforms trace a plain loop instead.

Symbols: T time steps, B batch, ``...`` any trailing (feature) dims, e.g. ``(T, B, H)``.
Lengths (``(B,)``, batch on dim 1): past each sequence's end the recurrence is made the
identity (``a = 1, b = 0``), so the final state is the one at the sequence's own end, and the
outputs there are zero -- the contract of :func:`rnnkit.scan.sequential_scan`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rnnkit.cells._autograd import differentiable_grads, plain_backward_needed
from rnnkit.cells._buffers import take
from rnnkit.cells._trace import graph_capture, transform_active, values_readable
from rnnkit.scan.fast.native import native_ops

__all__ = ["heinsen_scan", "linear_scan", "log_scan"]

_LOOP_MAX = 32  # at most this many steps: a plain loop beats the chunked passes


# -- the chunked real-space scan --------------------------------------------------------------
def _scan_core(a: Tensor, b: Tensor, h0: Tensor, reverse: bool) -> Tensor:
    """``h_t = a_t h_{t-1} + b_t`` (``reverse``: ``h_t = a_t h_{t+1} + b_t``, starting from
    ``h_T = h0``) on ``a, b (T, N)`` contiguous and ``h0 (N,)``; no autograd. Returns ``(T, N)``."""
    steps, n = a.shape
    if a.device.type == "cpu" and a.dtype in (torch.float32, torch.float64) and a.dtype == b.dtype == h0.dtype:
        ops = native_ops()
        if ops is not None:  # one streaming pass in C++ (csrc/steps.cpp): on a CPU, less memory traffic
            return ops.linear_scan(a, b, h0, reverse)
    if steps <= _LOOP_MAX:
        out = torch.empty_like(b)
        h = h0
        for t in (reversed(range(steps)) if reverse else range(steps)):
            h = torch.addcmul(b[t], a[t], h, out=out[t])
        return out
    chunk = math.isqrt(steps - 1) + 1  # C = ceil(sqrt(T))
    chunks = -(-steps // chunk)  # K
    pad = chunks * chunk - steps
    if pad:  # identity steps (a = 1, b = 0) where the iteration ends: they leave the state as is
        a = torch.cat((a, a.new_ones(pad, n)) if not reverse else (a.new_ones(pad, n), a))
        b = torch.cat((b, b.new_zeros(pad, n)) if not reverse else (b.new_zeros(pad, n), b))
    av, bv = a.view(chunks, chunk, n), b.view(chunks, chunk, n)  # (K, C, N)
    order = list(range(chunk))
    if reverse:
        order.reverse()
    # (1) every chunk from a zero state: end state s and product of coefficients p, (K, N) each
    s, p = bv[:, order[0]].clone(), av[:, order[0]].clone()
    for j in order[1:]:
        s.mul_(av[:, j]).add_(bv[:, j])
        p.mul_(av[:, j])
    # (2) the state leaving each chunk: the same recurrence over K chunks
    carry = _scan_core(p, s, h0, reverse)  # (K, N)
    if reverse:
        start = torch.cat((carry[1:], h0.unsqueeze(0)))  # state entering chunk k from the right
    else:
        start = torch.cat((h0.unsqueeze(0), carry[:-1]))  # (K, N)
    # (3) every chunk again from its true start
    out = torch.empty_like(bv)  # (K, C, N)
    h = start
    for j in order:
        h = torch.addcmul(bv[:, j], av[:, j], h, out=out[:, j])
    out = out.view(chunks * chunk, n)
    return out[pad:] if reverse else out[:steps]


# -- the scan as a custom op: compile and export see one node, double backward works -------------
@torch.library.custom_op("rnnkit::linear_scan", mutates_args=())
def _linear_scan_op(a: Tensor, b: Tensor, h0: Tensor, reverse: bool) -> Tensor:
    """:func:`_scan_core` (``a, b (T, N)``, ``h0 (N,)``) as an operator."""
    return _scan_core(a.contiguous(), b.contiguous(), h0.contiguous(), reverse)


@_linear_scan_op.register_fake
def _(a, b, h0, reverse):
    return torch.empty_like(b)


def _scan_setup(ctx, inputs, output):
    a, _, h0, reverse = inputs
    ctx.save_for_backward(a, output, h0)
    ctx.reverse = reverse


def _scan_grad(ctx, grad_h):
    """With ``g_t = dL/dh_t`` (total), ``g_t = grad_t + a_{t+1} g_{t+1}`` (reverse: ``a_{t-1}
    g_{t-1}``) is one more scan, and ``dL/db_t = g_t``, ``dL/da_t = g_t h_{t-1}``, ``dL/dh0 =
    a_0 g_0``. Written with the op and out-of-place ops, so it is itself differentiable (double
    backward)."""
    a, h, h0 = ctx.saved_tensors
    rev = ctx.reverse
    zero, first = torch.zeros_like(a[:1]), (-1 if rev else 0)
    a_next = torch.cat((zero, a[:-1])) if rev else torch.cat((a[1:], zero))  # carries g back one step
    g = _linear_scan_op(a_next, grad_h, torch.zeros_like(h0), not rev)  # (T, N)
    h_prev = torch.cat((h[1:], h0.unsqueeze(0))) if rev else torch.cat((h0.unsqueeze(0), h[:-1]))
    return g * h_prev, g, a[first] * g[first], None


_linear_scan_op.register_autograd(_scan_grad, setup_context=_scan_setup)


def _plain_scan(a: Tensor, b: Tensor, h0: Tensor, reverse: bool) -> Tensor:
    """The same recurrence step by step in plain ops: what torch.func transforms trace (custom
    ops' registered autograd does not compose with ``torch.func.grad``)."""
    h, out = h0, []
    for t in range(a.size(0) - 1, -1, -1) if reverse else range(a.size(0)):
        h = torch.addcmul(b[t], a[t], h)
        out.append(h)
    return torch.stack(out[::-1] if reverse else out)


# -- validation shared by the public functions --------------------------------------------------
def _check(a: Tensor, b: Tensor, h0: Tensor | None, lengths: Tensor | None, names: tuple[str, str]) -> None:
    na, nb = names
    for name, t in ((na, a), (nb, b)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point Tensor, got {getattr(t, 'dtype', type(t).__name__)}")
    if a.shape != b.shape:
        raise ValueError(f"{na} and {nb} must have the same shape (T, ...), got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() < 1 or a.size(0) == 0:
        raise ValueError(f"{na} must have a non-empty leading time dimension, got shape {tuple(a.shape)}")
    if h0 is not None and tuple(h0.shape) != tuple(a.shape[1:]):
        raise ValueError(f"h0 must have shape {tuple(a.shape[1:])} ({na} without its time dim), got {tuple(h0.shape)}")
    if lengths is not None:
        if a.dim() < 2 or tuple(lengths.shape) != (a.size(1),):
            raise ValueError(
                f"lengths must have shape ({a.size(1) if a.dim() > 1 else 'B'},) for {na} of shape "
                f"(T, B, ...) = {tuple(a.shape)}, got {tuple(lengths.shape)}"
            )
        if values_readable() and (bool((lengths < 1).any()) or bool((lengths > a.size(0)).any())):
            raise ValueError(f"lengths must lie in [1, T={a.size(0)}], got {lengths.tolist()}")


def _step_mask(lengths: Tensor, like: Tensor) -> Tensor:
    """``mask[t, b, ...] = t < lengths[b]``, broadcastable to ``like (T, B, ...)``."""
    steps = like.size(0)
    mask = torch.arange(steps, device=like.device).unsqueeze(1) < lengths.to(like.device).unsqueeze(0)  # (T, B)
    return mask.view(*mask.shape, *([1] * (like.dim() - 2)))


# -- public scans -------------------------------------------------------------------------------
def linear_scan(
    a: Tensor, b: Tensor, h0: Tensor | None = None, lengths: Tensor | None = None, *, reverse: bool = False
) -> tuple[Tensor, Tensor]:
    """Solve ``h_t = a_t * h_{t-1} + b_t`` for all ``t`` with the chunked parallel scan.

    ``a`` may be negative or zero. ``a, b (T, ...)``; ``h0 (...)`` or None for zeros; ``lengths
    (B,)`` with batch on dim 1 (see the module docstring). ``reverse=True`` runs backwards in
    time, ``h_t = a_t * h_{t+1} + b_t`` from ``h_T = h0`` (no ``lengths`` then). Returns
    ``(h (T, ...), h_last (...))`` where ``h_last`` is the state after the last step (at each
    sequence's end with lengths; ``h[0]`` when reversed).
    """
    _check(a, b, h0, lengths, ("a", "b"))
    if reverse and lengths is not None:
        raise ValueError("linear_scan: reverse=True takes no lengths; reverse each sequence first (reverse_padded)")
    if h0 is None:
        h0 = a.new_zeros(a.shape[1:])
    mask = None
    if lengths is not None and (not values_readable() or bool((lengths < a.size(0)).any())):
        mask = _step_mask(lengths, a)  # (T, B, 1...)
        a, b = torch.where(mask, a, 1.0), torch.where(mask, b, 0.0)
    shape = a.shape
    a2, b2 = a.reshape(shape[0], -1).contiguous(), b.reshape(shape[0], -1).contiguous()  # (T, N)
    scan = _plain_scan if transform_active(a2) else _linear_scan_op
    h = scan(a2, b2, h0.reshape(-1), reverse).view(shape)  # (T, ...)
    last = h[0] if reverse else h[-1]
    return (h if mask is None else h.masked_fill(~mask, 0.0)), last


def heinsen_scan(log_a: Tensor, log_b: Tensor, h0: Tensor | None = None) -> Tensor:
    """Heinsen's log-space scan: ``h_t = exp(log_a_t) h_{t-1} + exp(log_b_t)``, all ``t`` at once.

        a*_t = sum_{k<=t} log_a_k
        h_t  = exp(a*_t + logcumsumexp_{k<=t}(log_b_k - a*_k)) + exp(a*_t) * h0

    Heinsen (2023), eq. (2); Feng et al. (2024), appendix ``parallel_scan_log``. Deviation: the
    paper feeds ``log h0`` into the logcumsumexp, which needs ``h0 > 0``; here ``h0`` enters
    linearly, so any ``h0`` (zeros, negative) works. ``log_a, log_b (T, ...)``, ``h0 (...)``;
    returns ``h (T, ...)``. Float32 error grows with ``|a*_t|``; see :func:`log_scan`.
    """
    _check(log_a, log_b, h0, None, ("log_a", "log_b"))
    a_star = torch.cumsum(log_a, dim=0)  # (T, ...)
    h = torch.exp(a_star + torch.logcumsumexp(log_b - a_star, dim=0))
    return h if h0 is None else h + torch.exp(a_star) * h0


def log_scan(
    log_a: Tensor, log_b: Tensor, h0: Tensor | None = None, lengths: Tensor | None = None, *, chunk: int = 64
) -> tuple[Tensor, Tensor]:
    """``h_t = exp(log_a_t) h_{t-1} + exp(log_b_t)`` in log space, accurate for any T.

    Heinsen's scan (:func:`heinsen_scan`) inside chunks of ``chunk`` steps, all chunks at once,
    each from a zero state; the state entering each chunk comes from :func:`linear_scan` over the
    chunk ends (coefficient ``exp(sum of the chunk's log_a)``). Log prefix sums never span more
    than ``chunk`` steps, so float32 stays within ~1e-5 (relative) of float64 at T = 65,536 where the
    unchunked scan drifts by ~6e-3. Same arguments and return as :func:`linear_scan`.
    """
    _check(log_a, log_b, h0, lengths, ("log_a", "log_b"))
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    steps, tail = log_a.size(0), log_a.shape[1:]
    mask = None
    if lengths is not None and (not values_readable() or bool((lengths < steps).any())):
        mask = _step_mask(lengths, log_a)
        # identity past each end: a = 1, b = 0 (log b = -inf would poison logcumsumexp's backward)
        log_a = torch.where(mask, log_a, 0.0)
        log_b = torch.where(mask, log_b, -1e4)
    chunk = min(chunk, steps)
    chunks = -(-steps // chunk)  # K
    pad = chunks * chunk - steps
    if pad:  # identity steps after the end, cut off below
        log_a = torch.cat((log_a, log_a.new_zeros(pad, *tail)))
        log_b = torch.cat((log_b, log_b.new_full((pad, *tail), -1e4)))
    la = log_a.reshape(chunks, chunk, -1)  # (K, C, N)
    lb = log_b.reshape(chunks, chunk, -1)
    a_star = torch.cumsum(la, dim=1)  # (K, C, N): log of the product of a within the chunk so far
    local = torch.exp(a_star + torch.logcumsumexp(lb - a_star, dim=1))  # (K, C, N) from a zero state
    n = la.size(-1)
    start0 = log_a.new_zeros(n) if h0 is None else h0.reshape(n)
    ends, _ = linear_scan(torch.exp(a_star[:, -1]), local[:, -1], start0)  # (K, N) state after chunk k
    start = torch.cat((start0.unsqueeze(0), ends[:-1]))  # (K, N) state entering chunk k
    h = torch.addcmul(local, torch.exp(a_star), start.unsqueeze(1)).reshape(chunks * chunk, *tail)[:steps]
    return (h if mask is None else h.masked_fill(~mask, 0.0)), h[-1]


def minimal_scan(cell, x_proj: Tensor, state, lengths: Tensor | None = None):
    """All steps of a linear-recurrence cell (minGRU/minLSTM: ``h_t = a_t h_{t-1} + b_t`` with
    ``(a, b) = cell.coefficients(x_proj)``) at once: ``x_proj (T, B, G*H)``, ``state = (h0 (B, H),)``,
    ``lengths (B,)`` or None. Returns ``(h (T, B, H), (h_last (B, H),))`` as
    :func:`rnnkit.scan.sequential_scan`. The cell's ``scan`` picks the log-space scan
    (``"log"``), the real-space one (``"linear"``) or by device (``"auto"``: log on CUDA); "linear"
    and "auto" run fused kernels where they can (:func:`_fused_min_scan`: Triton on CUDA, the C++
    loop on a CPU)."""
    width = cell.gates * cell.hidden_size
    if x_proj.dim() != 3 or x_proj.size(-1) != width:
        raise ValueError(f"{type(cell).__name__} parallel scan: x_proj must have shape (T, B, {width}), "
                         f"got {tuple(x_proj.shape)}")
    (h0,) = cell.check_state(state, x_proj.size(1))
    fused = _fused_min_scan(cell, x_proj)
    if fused is not None:
        if lengths is not None:  # the checks the unfused scans make (linear_scan's and log_scan's _check)
            _check(x_proj, x_proj, None, lengths, ("x_proj", "x_proj"))
        h = fused(x_proj, h0, lengths, cell.gates)  # past each end: the state at the end
        last = h[-1]
        if lengths is not None and (not values_readable() or bool((lengths < x_proj.size(0)).any())):
            h = h.masked_fill(~_step_mask(lengths, h), 0.0)
        return h, (last,)
    scan = cell.scan if cell.scan != "auto" else ("log" if x_proj.device.type == "cuda" else "linear")
    if scan == "log":
        h, last = log_scan(*cell.log_coefficients(x_proj), h0, lengths)
    elif x_proj.device.type == "cpu" and not graph_capture(x_proj) and not transform_active(x_proj):
        h, last = _linear_in_time_chunks(cell, x_proj, h0, lengths)
    else:
        h, last = linear_scan(*cell.coefficients(x_proj), h0, lengths)
    return h, (last,)


def triton_min_scan_runs(cell, x: Tensor) -> bool:
    """Whether minGRU/minLSTM's scan on ``x`` runs as the fused Triton kernels
    (:mod:`rnnkit.scan.triton.min_scan`): a CUDA tensor of float32/64, triton installed, the cell's
    ``scan`` "auto" or "linear", and no torch.compile/export or torch.func transform tracing it."""
    from rnnkit.scan.triton import triton_available

    return (x.device.type == "cuda" and cell.scan in ("auto", "linear") and x.dtype in (torch.float32, torch.float64)
            and triton_available() and not graph_capture(x) and not transform_active(x))


def fused_min_scan_label(cell, x: Tensor) -> str | None:
    """How minGRU/minLSTM's scan runs on ``x`` when fused (for ``explain()``), or None."""
    fused = _fused_min_scan(cell, x)
    if fused is None:
        return None
    return "fused Triton scan kernels" if x.device.type == "cuda" else "fused C++ scan loop"


def _fused_min_scan(cell, x: Tensor):
    """The fused coefficients-and-scan kernels for minGRU/minLSTM on ``x``, or None: Triton on CUDA
    (:func:`triton_min_scan_runs`), the C++ loop on a CPU (:func:`native_min_scan`)."""
    if triton_min_scan_runs(cell, x):
        from rnnkit.scan.triton.min_scan import min_scan

        return min_scan
    if (x.device.type == "cpu" and cell.scan in ("auto", "linear") and x.dtype in (torch.float32, torch.float64)
            and not graph_capture(x) and not transform_active(x) and native_ops() is not None):
        return native_min_scan
    return None


def min_scan_plain(x_proj: Tensor, h0: Tensor, lens: Tensor | None, gates: int) -> Tensor:
    """minGRU (``gates=2``) / minLSTM (3) coefficients and scan in torch ops, with the fused kernels'
    contract (past a sequence's end ``h`` keeps the state at the end): their reference, and what
    their double backward differentiates."""
    from rnnkit.cells.minimal import g

    if gates == 2:
        d, v = x_proj.chunk(2, dim=-1)
    else:
        kf, ki, v = x_proj.chunk(3, dim=-1)
        d = torch.nn.functional.softplus(-kf) - torch.nn.functional.softplus(-ki)
    a, b = torch.sigmoid(-d), torch.sigmoid(d) * g(v)
    if lens is not None:
        live = (torch.arange(x_proj.size(0), device=x_proj.device)[:, None] < lens[None, :]).unsqueeze(-1)
        a, b = torch.where(live, a, 1.0), torch.where(live, b, 0.0)
    return linear_scan(a, b, h0)[0]


def fused_min_scan_function(name: str, run_forward, run_backward) -> type[torch.autograd.Function]:
    """The autograd Function of a fused minGRU/minLSTM scan, ``apply(x_proj, h0, lens, gates) -> h``:
    ``run_forward(x_proj, h0, lens, gates) -> h`` and ``run_backward(x_proj, h0, h, gy, lens, gates)
    -> (dx_proj, dh0)`` (contiguous ``x_proj`` and ``h0``); double backward and vmap go through
    :func:`min_scan_plain`. The C++ loop here and the Triton kernels
    (:mod:`rnnkit.scan.triton.min_scan`) share it."""

    def forward(ctx, x_proj, h0, lens, gates):
        x_proj, h0 = x_proj.contiguous(), h0.contiguous()
        hs = run_forward(x_proj, h0, lens, gates)
        ctx.save_for_backward(x_proj, h0, hs, lens)
        ctx.gates = gates
        return hs

    def backward(ctx, gy):
        x_proj, h0, hs, lens = ctx.saved_tensors
        if plain_backward_needed(gy):  # double backward or vmap: autograd through the plain form
            return differentiable_grads(min_scan_plain, ctx, (x_proj, h0, lens), (ctx.gates,), (gy,))
        dx, dh0 = run_backward(x_proj, h0, hs, gy, lens, ctx.gates)
        return dx, dh0, None, None

    return type(name, (torch.autograd.Function,), {"forward": staticmethod(forward),
                                                    "backward": staticmethod(backward)})


def _native_forward(x_proj, h0, lens, gates):
    hs = take((x_proj.size(0), x_proj.size(1), h0.size(1)), x_proj)
    native_ops().min_scan_forward(x_proj, h0, lens, gates, hs)
    return hs


def _native_backward(x_proj, h0, hs, gy, lens, gates):
    dx, dh0 = take(x_proj.shape, x_proj), torch.empty_like(h0)
    native_ops().min_scan_backward(x_proj, h0, hs, gy, lens, gates, dx, dh0)
    return dx, dh0


#: minGRU/minLSTM's coefficients and scan in one C++ pass each way (``csrc/min_scan.cpp``)
_NativeMinScan = fused_min_scan_function("_NativeMinScan", _native_forward, _native_backward)


def native_min_scan(x_proj: Tensor, h0: Tensor, lengths: Tensor | None, gates: int) -> Tensor:
    """:func:`min_scan_plain`'s result from the C++ loop (CPU; needs :func:`native_ops`)."""
    lens = None if lengths is None else lengths.to(device="cpu", dtype=torch.int64).contiguous()
    return _NativeMinScan.apply(x_proj, h0, lens, gates)


#: elements of ``x_proj`` per time chunk on a CPU without the C++ loops (2 MiB in float32): a chunk's coefficients, scan
#: and their backward stay in cache. Measured (B8 H128, 2 threads, minGRU fwd+bwd vs torch.nn.GRU):
#: the whole sequence at once fell from 7.4x at T=1,024 to 4.7x at T=16,384.
CHUNK_ELEMENTS = 1 << 19


def _linear_in_time_chunks(cell, x_proj: Tensor, h0: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
    """:func:`linear_scan` of ``cell.coefficients(x_proj)``, a time chunk at a time, each chunk
    starting from the last one's state (past a sequence's end: a = 1, b = 0, output 0)."""
    steps = x_proj.size(0)
    step = max(32, CHUNK_ELEMENTS // max(1, x_proj[0].numel()))
    if steps <= step:
        return linear_scan(*cell.coefficients(x_proj), h0, lengths)
    mask = None
    if lengths is not None and (not values_readable() or bool((lengths < steps).any())):
        mask = _step_mask(lengths, x_proj)  # (T, B, 1)
    h, outs = h0, []
    masks = mask.split(step) if mask is not None else [None] * -(-steps // step)
    for xc, m in zip(x_proj.split(step), masks, strict=True):  # split: its backward is one cat, not a slice each
        a, b = cell.coefficients(xc)  # (C, B, H) each
        if m is not None:
            a, b = torch.where(m, a, 1.0), torch.where(m, b, 0.0)
        out, h = linear_scan(a, b, h)
        outs.append(out if mask is None else out.masked_fill(~m, 0.0))
    return torch.cat(outs), h
