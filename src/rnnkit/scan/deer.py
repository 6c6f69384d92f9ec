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
quasi-Newton iteration (a reversed diagonal scan for ``d``, plus one batched vector-Jacobian
product ``J^T lam`` for all ``t`` at once per iteration), then one more batched VJP gives the
gradients of ``x_proj``, ``h0``, ``weight_hh`` and ``bias_hh``. These equal the sequential (BPTT)
gradients to the tolerance; if the adjoint does not converge, backward falls back to BPTT with
the same warning. Not implemented: full-Jacobian DEER, ELK's damping/trust region (Gonzalez et
al.), ParaRNN's block-diagonal Newton (2025).

Shapes: T steps, B batch, H hidden; ``x_proj (T, B, 3H)`` = ``cell.project_input(x)``,
``h0 (B, H)``, ``lengths (B,)``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.cells.base import State
from rnnkit.cells.gru import GRUCell
from rnnkit.scan.parallel import linear_scan
from rnnkit.scan.sequential import length_mask, sequential_scan

__all__ = ["DeerGRUCell", "DeerNotConverged", "DeerSolution", "deer_gru", "deer_solve"]


class DeerNotConverged(RuntimeWarning):
    """quasi-DEER did not converge; the sequential scan's result was used instead."""


class DeerSolution(NamedTuple):
    h: Tensor  # (T, B, H) trajectory (frozen, not zeroed, past each sequence's end)
    iterations: int  # Newton iterations taken
    converged: bool
    delta: float  # max |h^(i) - h^(i-1)| at the last iteration


def gru_eval(cell: GRUCell, x_proj: Tensor, h_prev: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``f(h_prev_t, x_t)`` for all ``t`` at once and the diagonal ``d_t`` of its Jacobian.

    The same math as :meth:`GRUCell.step` (a test asserts it), unrolled to expose the gates the
    Jacobian needs. ``x_proj (T, B, 3H)``, ``h_prev (T, B, H)``, ``mask (T, B, 1)`` or None:
    where False, the step is the identity (``f = h_prev``, ``d = 1``). Returns ``(f, d)``, each
    ``(T, B, H)``; ``d`` carries no graph.
    """
    H = cell.hidden_size
    hh = F.linear(h_prev, cell.weight_hh, cell.bias_hh)  # (T, B, 3H): r, z, n blocks
    rz = torch.sigmoid(x_proj[..., : 2 * H] + hh[..., : 2 * H])  # (T, B, 2H)
    r, z = rz[..., :H], rz[..., H:]
    hn = hh[..., 2 * H :]
    n = torch.tanh(torch.addcmul(x_proj[..., 2 * H :], r, hn))  # (T, B, H)
    f = torch.lerp(n, h_prev, z)  # (1 - z) * n + z * h_prev
    with torch.no_grad():
        w_r, w_z, w_n = cell.weight_hh.view(3, H, H).diagonal(dim1=1, dim2=2)  # (H,) each
        dn = (1 - n * n) * (r * (1 - r) * w_r * hn + r * w_n)
        d = z + (h_prev - n) * (z * (1 - z) * w_z) + (1 - z) * dn
    if mask is not None:
        f = torch.where(mask, f, h_prev)
        d = torch.where(mask, d, 1.0)
    return f, d


def _shift(h: Tensor, h0: Tensor) -> Tensor:
    """``[h0, h_0, ..., h_{T-2}]``: the previous state of every step, ``(T, B, H)``."""
    return torch.cat((h0.unsqueeze(0), h[:-1]))


def _mask(lengths: Tensor | None, x_proj: Tensor) -> Tensor | None:
    if lengths is None or bool((lengths.to(x_proj.device) == x_proj.size(0)).all()):
        return None
    return length_mask(lengths.to(x_proj.device), x_proj.size(0)).unsqueeze(-1)  # (T, B, 1)


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


def deer_solve(
    cell: GRUCell, x_proj: Tensor, h0: Tensor, lengths: Tensor | None = None, *, tol: float = 1e-5, max_iter: int = 100
) -> DeerSolution:
    """The quasi-DEER Newton iteration alone, without autograd (see the module docstring)."""
    _check(cell, x_proj, h0, tol, max_iter)
    mask = _mask(lengths, x_proj)
    with torch.no_grad():
        x_proj, h0 = x_proj.detach(), h0.detach()
        h = torch.zeros(*x_proj.shape[:2], cell.hidden_size, device=x_proj.device, dtype=x_proj.dtype)  # guess
        delta = float("inf")
        for it in range(1, max_iter + 1):
            h_prev = _shift(h, h0)  # (T, B, H)
            f, d = gru_eval(cell, x_proj, h_prev, mask)
            new, _ = linear_scan(d, torch.addcmul(f, d, h_prev, value=-1.0), h0)  # d h_{t-1} + (f - d h^(i)_{t-1})
            delta = float((new - h).abs().max())
            h = new
            if delta <= tol:
                return DeerSolution(h, it, True, delta)
            if not math.isfinite(delta):  # quasi-DEER diverged
                return DeerSolution(h, it, False, delta)
    return DeerSolution(h, max_iter, False, delta)


def _trajectory(cell: GRUCell, x_proj: Tensor, h0: Tensor, mask: Tensor | None) -> Tensor:
    """Sequential reference for the raw trajectory (frozen past each end): BPTT fallback."""
    masks = mask.unbind(0) if mask is not None else None
    h, out = h0, []
    for t, xp in enumerate(x_proj.unbind(0)):
        new, _ = cell.step(xp, (h,))
        h = new if masks is None else torch.where(masks[t], new, h)
        out.append(h)
    return torch.stack(out)  # (T, B, H)


class _ImplicitGRU(torch.autograd.Function):
    """Output: the converged trajectory. Backward: the implicit-function-theorem adjoint."""

    @staticmethod
    def forward(ctx, holder, x_proj, h0, weight_hh, bias_hh, cell, mask, tol, max_iter, stats):
        h = holder[0]
        ctx.save_for_backward(x_proj, h0, h)
        ctx.cell, ctx.mask, ctx.tol, ctx.max_iter, ctx.stats = cell, mask, tol, max_iter, stats
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h):
        x_proj, h0, h = ctx.saved_tensors
        cell, mask = ctx.cell, ctx.mask
        params = [p for p in (cell.weight_hh, cell.bias_hh) if p is not None]
        with torch.enable_grad():
            xp = x_proj.detach().requires_grad_()
            hp = _shift(h, h0).detach().requires_grad_()
            f, d = gru_eval(cell, xp, hp, mask)
        d_next = torch.zeros_like(d)  # d_{t+1}: carries lam_{t+1} back to step t
        d_next[:-1] = d[1:]
        lam = torch.zeros_like(grad_h)
        v = torch.zeros_like(grad_h)  # J_t^T lam_t
        converged, iterations = False, 0
        while iterations < ctx.max_iter:
            iterations += 1
            c = grad_h.clone()
            c[:-1] += (v - d * lam)[1:]  # grad_t + (J^T lam - d lam)_{t+1}, with the old lam
            new, _ = linear_scan(d_next, c, reverse=True)  # lam_t = d_{t+1} lam_{t+1} + c_t
            delta = float((new - lam).abs().max())
            lam = new
            if delta <= ctx.tol * (1.0 + float(lam.abs().max())):
                converged = True
                break
            if not math.isfinite(delta):
                break
            v = torch.autograd.grad(f, hp, lam, retain_graph=True)[0]
        if ctx.stats is not None:
            ctx.stats.update(backward_iterations=iterations, backward_converged=converged)
        if converged:
            g_xp, g_hp, *g_params = torch.autograd.grad(f, [xp, hp, *params], lam)
            g_h0 = g_hp[0]
        else:
            warnings.warn(
                f"quasi-DEER adjoint did not converge in max_iter={ctx.max_iter} iterations; "
                "backward falls back to sequential BPTT", DeerNotConverged, stacklevel=2,
            )
            with torch.enable_grad():
                xp = x_proj.detach().requires_grad_()
                h0_leaf = h0.detach().requires_grad_()
                traj = _trajectory(cell, xp, h0_leaf, mask)
                g_xp, g_h0, *g_params = torch.autograd.grad(traj, [xp, h0_leaf, *params], grad_h)
        g_w = g_params[0]
        g_b = g_params[1] if cell.bias_hh is not None else None
        return None, g_xp, g_h0, g_w, g_b, None, None, None, None, None


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
    ``converged``, ``delta`` and, after backward, ``backward_iterations``/``backward_converged``.
    """
    sol = deer_solve(cell, x_proj, h0, lengths, tol=tol, max_iter=max_iter)
    if stats is not None:
        stats.clear()
        stats.update(iterations=sol.iterations, converged=sol.converged, delta=sol.delta)
    if not sol.converged:
        warnings.warn(
            f"quasi-DEER did not converge in {sol.iterations} of max_iter={max_iter} iterations "
            f"(last change {sol.delta:.3g} > tol={tol}); using the sequential scan", DeerNotConverged, stacklevel=2,
        )
        return sequential_scan(cell, x_proj, (h0,), lengths)
    mask = _mask(lengths, x_proj)
    h = _ImplicitGRU.apply([sol.h], x_proj, h0, cell.weight_hh, cell.bias_hh, cell, mask, tol, max_iter, stats)
    return (h if mask is None else h.masked_fill(~mask, 0.0)), (h[-1],)


class DeerGRUCell(GRUCell):
    """A :class:`GRUCell` whose ``parallel_scan`` is quasi-DEER (:func:`deer_gru`).

    Same parameters, ``step`` and results as the GRU cell; use it with
    ``Recurrent(DeerGRUCell(...), backend="parallel")``. (With ``backend="auto"`` the fused GRU
    kernel, which computes the same function, is chosen first.) ``tol`` and ``max_iter`` as in
    :func:`deer_gru`; ``stats`` holds the last call's iteration counts.
    """

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
