"""Newton-parallel evaluation of the GRU (quasi-DEER): the whole hidden trajectory at once.

The GRU is ``h_t = f(h_{t-1}, x_t)`` (see :mod:`rnnkit.cells.gru`). DEER (Lim et al., "Parallelizing
non-linear sequential models over the sequence length", ICLR 2024) solves the T equations
``h_t - f(h_{t-1}, x_t) = 0`` for all ``t`` by Newton's method; each Newton step linearises ``f``
around the current guess ``h^(i)`` and solves the linear recurrence

    h^(i+1)_t = J_t h^(i+1)_{t-1} + (f(h^(i)_{t-1}, x_t) - J_t h^(i)_{t-1})

with a parallel scan. quasi-DEER (Gonzalez et al., "Towards scalable and stable parallelization of
nonlinear RNNs", NeurIPS 2024) keeps only the diagonal ``d_t = diag(df/dh_{t-1})``, so the step is
the elementwise recurrence of :func:`rnnkit.scan.parallel.linear_scan` (``d_t`` may be negative).
For the GRU, with ``hn = h_{t-1} W_hn^T + b_hn`` and ``w_r, w_z, w_n`` the diagonals of
``W_hr, W_hz, W_hn``:

    d_t = z + (h_{t-1} - n) * z (1 - z) w_z + (1 - z) (1 - n^2) (r (1 - r) w_r hn + r w_n)

Stops when ``max |h^(i+1) - h^(i)| <= tol``; after ``i`` iterations at least the first ``i`` steps
are exact, so ``max_iter >= T`` always converges in exact arithmetic. If it has not converged
after ``max_iter`` iterations (or diverged to inf/nan, which quasi-DEER can), a
:class:`DeerNotConverged` warning is issued and the sequential scan's result is returned instead.

Gradients: the implicit-function theorem, not differentiation through the iterations. At the
solution, the adjoint ``lam_t = dL/dh_t`` (total) solves ``lam_t = grad_t + J_{t+1}^T lam_{t+1}``,
a linear recurrence backwards in time with the transposed Jacobian. It is solved by the same
quasi-Newton iteration (a reversed diagonal scan for ``d``, plus the product ``J^T lam`` for all
``t`` at once, written out as one GEMM: see :class:`GRULinearization`), then one more product
gives the gradients of ``x_proj``, ``h0``, ``weight_hh`` and ``bias_hh``. These equal the
sequential (BPTT) gradients to the tolerance; if the adjoint does not converge, the same linear
recurrence is solved step by step backwards (BPTT), with the same warning. Double backward
(``create_graph=True``) differentiates the sequential GRU in plain torch ops on the saved inputs.

Under ``torch.compile`` and ``torch.export`` the solve and the adjoint run as the custom ops
``rnnkit::deer_gru_forward`` and ``rnnkit::deer_gru_backward`` (fake kernels and autograd
registered), so the data-dependent Newton loop is one opaque node. torch.func transforms and
TorchScript tracing cannot run it: the parallel backend refuses DEER there, and the layer runs
the same GRU on another backend (``explain()`` says so).

Cost: each iteration does about the arithmetic of one sequential GRU pass (a ``(T*B, H) x (H, 3H)``
GEMM plus elementwise work), but with no step waiting for the previous one. It pays off where
there is parallel hardware to fill (a GPU, long T); on a few CPU cores it is slower than the
fused GRU kernel (see ``benchmarks/parallel.py``).

Not implemented: full-Jacobian DEER, ELK's damping/trust region (Gonzalez et al.), ParaRNN's
block-diagonal Newton (Danieli et al., 2025).

Shapes: T steps, B batch, H hidden; ``x_proj (T, B, 3H)`` = ``cell.project_input(x)``,
``h0 (B, H)``, ``lengths (B,)``.
"""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.cells._autograd import differentiable_grads, plain_backward_needed
from rnnkit.cells._trace import graph_capture, values_readable
from rnnkit.cells.base import State
from rnnkit.cells.gru import GRUCell
from rnnkit.scan.parallel import linear_scan
from rnnkit.scan.sequential import length_mask

__all__ = [
    "DeerGRUCell", "DeerNotConverged", "DeerSolution", "GRULinearization", "deer_gru", "deer_solve", "gru_eval",
    "gru_linearize",
]


class DeerNotConverged(RuntimeWarning):
    """quasi-DEER did not converge; the sequential scan's result was used instead."""


class DeerSolution(NamedTuple):
    h: Tensor  # (T, B, H) trajectory (frozen, not zeroed, past each sequence's end)
    iterations: int  # Newton iterations taken
    converged: bool
    delta: float  # max |h^(i) - h^(i-1)| at the last iteration


class GRULinearization(NamedTuple):
    """The GRU at a trajectory ``h_prev``: ``f`` and what its Jacobian ``J_t = df_t/dh_{t-1}`` needs.

    With ``hh = h_prev W_hh^T + b_hh`` (blocks r, z, n) and ``c_k = df/d(hh block k)`` per unit:
    ``J_t^T lam = z * lam + (lam * c) W_hh`` (one GEMM for all t), ``d = z + sum_k c_k w_k`` with
    ``w_k`` the diagonal of block k of ``W_hh``. Masked (finished) steps have ``z = 1, c = 0``.
    """

    f: Tensor  # (T, B, H) f(h_prev_t, x_t)
    d: Tensor  # (T, B, H) diagonal of J_t
    z: Tensor  # (T, B, H) update gate
    c: Tensor  # (T, B, 3, H) sensitivities to the r, z, n blocks of hh
    c_xn: Tensor  # (T, B, H) sensitivity to the n block of x_proj (= c_n / r)


def _linearize(w_hh: Tensor, b_hh: Tensor | None, x_proj: Tensor, h_prev: Tensor,
               mask: Tensor | None) -> GRULinearization:
    H = h_prev.size(-1)
    hh = F.linear(h_prev, w_hh, b_hh)  # (T, B, 3H): r, z, n blocks
    rz = torch.sigmoid(x_proj[..., : 2 * H] + hh[..., : 2 * H])  # (T, B, 2H)
    r, z = rz[..., :H], rz[..., H:]
    hn = hh[..., 2 * H :]
    n = torch.tanh(torch.addcmul(x_proj[..., 2 * H :], r, hn))  # (T, B, H)
    f = torch.lerp(n, h_prev, z)  # (1 - z) * n + z * h_prev
    c_xn = (1 - z) * (1 - n * n)  # df/d(n pre-activation)
    c = torch.stack((c_xn * hn * r * (1 - r), (h_prev - n) * z * (1 - z), c_xn * r), dim=-2)  # (T, B, 3, H)
    if mask is not None:
        f = torch.where(mask, f, h_prev)
        z = torch.where(mask, z, 1.0)
        c = c.masked_fill(~mask.unsqueeze(-1), 0.0)
        c_xn = c_xn.masked_fill(~mask, 0.0)
    w_r, w_z, w_n = w_hh.view(3, H, H).diagonal(dim1=1, dim2=2)  # (H,) each
    d = torch.addcmul(torch.addcmul(torch.addcmul(z, c[..., 0, :], w_r), c[..., 1, :], w_z), c[..., 2, :], w_n)
    return GRULinearization(f, d, z, c, c_xn)


@torch.no_grad()
def gru_linearize(cell: GRUCell, x_proj: Tensor, h_prev: Tensor, mask: Tensor | None = None) -> GRULinearization:
    """The GRU step for all ``t`` at once, unrolled to expose the gates the Jacobian needs.

    The same math as :meth:`GRUCell.step` (a test asserts it). ``x_proj (T, B, 3H)``, ``h_prev
    (T, B, H)``, ``mask (T, B, 1)`` or None: where False, the step is the identity.
    """
    return _linearize(cell.weight_hh, cell.bias_hh, x_proj, h_prev, mask)


def gru_eval(cell: GRUCell, x_proj: Tensor, h_prev: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(f, d)``: the GRU step for all ``t`` at once and the diagonal of its Jacobian, ``(T, B, H)`` each."""
    lin = gru_linearize(cell, x_proj, h_prev, mask)
    return lin.f, lin.d


def _jacobian_t_vec(w_hh: Tensor, lin: GRULinearization, lam: Tensor) -> tuple[Tensor, Tensor]:
    """``(J_t^T lam_t for all t, dL/dhh)``: ``(..., H)`` and ``(N, 3H)`` (``N`` the leading size)."""
    H = lam.size(-1)
    g_hh = (lam.unsqueeze(-2) * lin.c).reshape(-1, 3 * H)  # (N, 3H)
    v = torch.addmm((lam * lin.z).reshape(-1, H), g_hh, w_hh)  # (N, 3H) @ (3H, H)
    return v.view(lam.shape), g_hh


def _shift(h: Tensor, h0: Tensor) -> Tensor:
    """``[h0, h_0, ..., h_{T-2}]``: the previous state of every step, ``(T, B, H)``."""
    return torch.cat((h0.unsqueeze(0), h[:-1]))


def _mask(lengths: Tensor | None, x_proj: Tensor) -> Tensor | None:
    if lengths is None:
        return None
    lengths = lengths.to(x_proj.device)
    # (under compile/export the values cannot be read: mask every step, which is right for any lengths)
    if values_readable() and bool((lengths == x_proj.size(0)).all()):
        return None
    return length_mask(lengths, x_proj.size(0)).unsqueeze(-1)  # (T, B, 1)


def _check(cell: Any, x_proj: Tensor, h0: Tensor, tol: float, max_iter: int) -> None:
    if not isinstance(cell, GRUCell):
        raise TypeError(f"cell must be a GRUCell, got {type(cell).__name__}")
    H = cell.hidden_size
    if x_proj.dim() != 3 or x_proj.size(-1) != 3 * H:
        raise ValueError(f"x_proj must have shape (T, B, {3 * H}) (cell.project_input(x)), got {tuple(x_proj.shape)}")
    if tuple(h0.shape) != (x_proj.size(1), H):
        raise ValueError(f"h0 must have shape ({x_proj.size(1)}, {H}), got {tuple(h0.shape)}")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")


def _newton(x_proj: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor | None, mask: Tensor | None, tol: float,
            max_iter: int) -> DeerSolution:
    """The quasi-DEER iteration on plain tensors (no autograd)."""
    h = torch.zeros_like(h0).expand(x_proj.size(0), *h0.shape).contiguous()  # (T, B, H) guess
    delta = float("inf")
    for it in range(1, max_iter + 1):
        h_prev = _shift(h, h0)  # (T, B, H)
        lin = _linearize(w_hh, b_hh, x_proj, h_prev, mask)
        new, _ = linear_scan(lin.d, torch.addcmul(lin.f, lin.d, h_prev, value=-1.0), h0)  # d h_{t-1} + (f - d h^(i))
        delta = float((new - h).abs().max()) if new.numel() else 0.0
        h = new
        if delta <= tol:
            return DeerSolution(h, it, True, delta)
        if not math.isfinite(delta):  # quasi-DEER diverged
            return DeerSolution(h, it, False, delta)
    return DeerSolution(h, max_iter, False, delta)


def deer_solve(
    cell: GRUCell, x_proj: Tensor, h0: Tensor, lengths: Tensor | None = None, *, tol: float = 1e-5, max_iter: int = 100
) -> DeerSolution:
    """The quasi-DEER Newton iteration alone, without autograd (see the module docstring)."""
    _check(cell, x_proj, h0, tol, max_iter)
    with torch.no_grad():
        return _newton(x_proj.detach(), h0.detach(), cell.weight_hh.detach(),
                       None if cell.bias_hh is None else cell.bias_hh.detach(), _mask(lengths, x_proj), tol, max_iter)


def _plain(x_proj: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor | None, mask: Tensor | None) -> Tensor:
    """The trajectory by the sequential GRU in plain torch ops (frozen past each end): the result
    where Newton does not converge, and the form differentiated for double backward. It runs
    :meth:`GRUCell.step` itself on the given tensors, so it is the sequential scan's result exactly."""
    weights = SimpleNamespace(hidden_size=h0.size(-1), weight_hh=w_hh, bias_hh=b_hh)  # what step reads
    masks = mask.unbind(0) if mask is not None else None
    h, out = h0, []
    for t, xp in enumerate(x_proj.unbind(0)):
        new, _ = GRUCell.step(weights, xp, (h,))
        h = new if masks is None else torch.where(masks[t], new, h)
        out.append(h)
    return torch.stack(out) if out else x_proj.new_empty(0, *h0.shape)  # (T, B, H)


def _solve(x_proj: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor | None, mask: Tensor | None, tol: float,
           max_iter: int) -> tuple[Tensor, DeerSolution]:
    """The trajectory: Newton's, or the sequential one (with a warning) where Newton did not converge."""
    with torch.no_grad():
        sol = _newton(x_proj, h0, w_hh, b_hh, mask, tol, max_iter)
        if sol.converged:
            return sol.h, sol
        warnings.warn(
            f"quasi-DEER did not converge in {sol.iterations} of max_iter={max_iter} iterations "
            f"(last change {sol.delta:.3g} > tol={tol}); using the sequential scan", DeerNotConverged, stacklevel=3,
        )
        return _plain(x_proj, h0, w_hh, b_hh, mask), sol


def _adjoint(grad_h: Tensor, x_proj: Tensor, h0: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None,
             mask: Tensor | None, tol: float, max_iter: int) -> tuple[Tensor, Tensor, Tensor, Tensor | None, int, bool]:
    """``(dL/dx_proj, dL/dh0, dL/dW_hh, dL/db_hh, iterations, converged)`` from ``dL/dh`` at the
    solution ``h``: the implicit-function-theorem adjoint by quasi-Newton, or (where that does not
    converge, with a warning) the same linear recurrence solved step by step backwards (BPTT)."""
    T, B, H = h.shape
    hp = _shift(h, h0)  # (T, B, H)
    lin = _linearize(w_hh, b_hh, x_proj, hp, mask)
    d = lin.d
    d_next = torch.cat((d[1:], torch.zeros_like(d[:1])))  # d_{t+1}: carries lam_{t+1} back to step t
    lam = torch.zeros_like(grad_h)
    v = torch.zeros_like(grad_h)  # J_t^T lam_t
    converged, iterations = False, 0
    while iterations < max_iter:
        iterations += 1
        c = grad_h + torch.cat(((v - d * lam)[1:], torch.zeros_like(lam[:1])))  # grad_t + (J^T lam - d lam)_{t+1}
        new, _ = linear_scan(d_next, c, reverse=True)  # lam_t = d_{t+1} lam_{t+1} + c_t
        delta = float((new - lam).abs().max()) if new.numel() else 0.0
        lam = new
        if delta <= tol * (1.0 + (float(lam.abs().max()) if lam.numel() else 0.0)):
            converged = True
            break
        if not math.isfinite(delta):
            break
        v, _ = _jacobian_t_vec(w_hh, lin, lam)
    if not converged:
        warnings.warn(
            f"quasi-DEER adjoint did not converge in max_iter={max_iter} iterations; "
            "backward falls back to sequential BPTT", DeerNotConverged, stacklevel=3,
        )
        lams = [grad_h[-1]]
        for t in range(T - 2, -1, -1):  # lam_t = grad_t + J_{t+1}^T lam_{t+1}
            step = GRULinearization(*(part[t + 1] for part in lin))
            lams.append(grad_h[t] + _jacobian_t_vec(w_hh, step, lams[-1])[0])
        lam = torch.stack(lams[::-1])
    v, g_hh = _jacobian_t_vec(w_hh, lin, lam)  # (T, B, H), (T*B, 3H) = dL/dhh
    g_xp = g_hh.view(T, B, 3 * H).clone()  # r, z blocks: same as hh's
    g_xp[..., 2 * H :] = lam * lin.c_xn  # n block: x_proj enters outside r * (...)
    g_w = g_hh.t() @ hp.reshape(T * B, H)  # (3H, T*B) @ (T*B, H)
    g_b = g_hh.sum(0) if b_hh is not None else None
    return g_xp, v[0], g_w, g_b, iterations, converged


class _ImplicitGRU(torch.autograd.Function):
    """Eager: the trajectory, with the implicit-function-theorem adjoint as backward (and the
    plain form's autograd when a graph of the backward is asked for)."""

    @staticmethod
    def forward(ctx, x_proj, h0, w_hh, b_hh, mask, tol, max_iter, stats):
        h, sol = _solve(x_proj, h0, w_hh, b_hh, mask, tol, max_iter)
        if stats is not None:
            stats.clear()
            stats.update(iterations=sol.iterations, converged=sol.converged, delta=sol.delta)
        ctx.save_for_backward(x_proj, h0, w_hh, b_hh, mask, h)
        ctx.tol, ctx.max_iter, ctx.stats = tol, max_iter, stats
        return h

    @staticmethod
    def backward(ctx, grad_h):
        x_proj, h0, w_hh, b_hh, mask, h = ctx.saved_tensors
        if plain_backward_needed(grad_h):
            return differentiable_grads(_plain, ctx, (x_proj, h0, w_hh, b_hh, mask), (), (grad_h,))
        g_xp, g_h0, g_w, g_b, iterations, converged = _adjoint(grad_h, x_proj, h0, h, w_hh, b_hh, mask, ctx.tol,
                                                               ctx.max_iter)
        if ctx.stats is not None:
            ctx.stats.update(backward_iterations=iterations, backward_converged=converged)
        return g_xp, g_h0, g_w, g_b, None, None, None, None


# -- the same as custom ops, for torch.compile and torch.export --------------------------------------
@torch.library.custom_op("rnnkit::deer_gru_forward", mutates_args=())
def _deer_forward(x_proj: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor | None, mask: Tensor | None, tol: float,
                  max_iter: int) -> Tensor:
    return _solve(x_proj, h0, w_hh, b_hh, mask, tol, max_iter)[0]


@_deer_forward.register_fake
def _(x_proj, h0, w_hh, b_hh, mask, tol, max_iter):
    return x_proj.new_empty(x_proj.size(0), *h0.shape)


@torch.library.custom_op("rnnkit::deer_gru_backward", mutates_args=())
def _deer_backward(grad_h: Tensor, x_proj: Tensor, h0: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None,
                   mask: Tensor | None, tol: float, max_iter: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g_xp, g_h0, g_w, g_b, _, _ = _adjoint(grad_h, x_proj, h0, h, w_hh, b_hh, mask, tol, max_iter)
    return g_xp, g_h0, g_w, (x_proj.new_empty(0) if g_b is None else g_b)


@_deer_backward.register_fake
def _(grad_h, x_proj, h0, h, w_hh, b_hh, mask, tol, max_iter):
    return (x_proj.new_empty(x_proj.shape), h0.new_empty(h0.shape), w_hh.new_empty(w_hh.shape),
            x_proj.new_empty(0) if b_hh is None else b_hh.new_empty(b_hh.shape))


def _setup(ctx, inputs, output):
    x_proj, h0, w_hh, b_hh, mask, tol, max_iter = inputs
    ctx.save_for_backward(x_proj, h0, w_hh, b_hh, mask, output)
    ctx.tol, ctx.max_iter = tol, max_iter


def _op_grad(ctx, grad_h):
    x_proj, h0, w_hh, b_hh, mask, h = ctx.saved_tensors
    if plain_backward_needed(grad_h):
        return differentiable_grads(_plain, ctx, (x_proj, h0, w_hh, b_hh, mask), (), (grad_h,))
    g_xp, g_h0, g_w, g_b = _deer_backward(grad_h, x_proj, h0, h, w_hh, b_hh, mask, ctx.tol, ctx.max_iter)
    return g_xp, g_h0, g_w, (g_b if b_hh is not None else None), None, None, None


_deer_forward.register_autograd(_op_grad, setup_context=_setup)


def deer_gru(
    cell: GRUCell, x_proj: Tensor, h0: Tensor, lengths: Tensor | None = None, *,
    tol: float = 1e-5, max_iter: int = 100, stats: dict | None = None,
) -> tuple[Tensor, State]:
    """Run a GRU cell over ``x_proj (T, B, 3H)`` from ``h0 (B, H)`` by quasi-DEER.

    Same contract as :func:`rnnkit.scan.sequential_scan`: returns ``(h (T, B, H), (h_last,))``,
    outputs zero and state frozen past each sequence's end. ``tol``: absolute convergence
    threshold on ``max |h^(i+1) - h^(i)|`` (the adjoint uses it relative to ``1 + max|lam|``);
    ``max_iter``: Newton iterations before the sequential fallback (with a
    :class:`DeerNotConverged` warning). ``stats``, if a dict, receives ``iterations``,
    ``converged``, ``delta`` and, after backward, ``backward_iterations``/``backward_converged``
    (in eager calls; under torch.compile/export the solve runs inside the ``rnnkit::deer_gru_*``
    ops, and ``stats`` is left alone).
    """
    _check(cell, x_proj, h0, tol, max_iter)
    mask = _mask(lengths, x_proj)
    if graph_capture(x_proj):
        h = _deer_forward(x_proj, h0, cell.weight_hh, cell.bias_hh, mask, tol, max_iter)
    else:
        h = _ImplicitGRU.apply(x_proj, h0, cell.weight_hh, cell.bias_hh, mask, tol, max_iter, stats)
    return (h if mask is None else h.masked_fill(~mask, 0.0)), (h[-1],)


class DeerGRUCell(GRUCell):
    """A :class:`GRUCell` whose ``parallel_scan`` is quasi-DEER (:func:`deer_gru`).

    Same parameters, ``step`` and results as the GRU cell; use it with
    ``Recurrent(DeerGRUCell(...), backend="parallel")``. (With ``backend="auto"`` the fused GRU
    kernel, which computes the same function, is chosen first.) ``tol`` and ``max_iter`` as in
    :func:`deer_gru`; ``stats`` holds the last eager call's iteration counts.
    """

    #: the Newton loop stops on a data-dependent test: torch.func transforms and TorchScript tracing
    #: cannot trace it (under torch.compile/export it runs as the rnnkit::deer_gru_* custom ops)
    parallel_traceable = False

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, tol: float = 1e-5, max_iter: int = 100,
        device=None, dtype=None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        if not tol > 0:
            raise ValueError(f"tol must be positive, got {tol}")
        if not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
        self.tol, self.max_iter = tol, max_iter
        self.config.update(tol=tol, max_iter=max_iter)
        self.stats: dict = {}

    def parallel_scan(self, x_proj: Tensor, state: State, lengths: Tensor | None = None) -> tuple[Tensor, State]:
        (h0,) = self.check_state(state, x_proj.size(1))
        return deer_gru(self, x_proj, h0, lengths, tol=self.tol, max_iter=self.max_iter, stats=self.stats)
