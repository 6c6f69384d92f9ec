"""The recurrent Jacobian's spectral norm, estimated by power iteration with autograd.

For one step ``s_t = step(x_t, s_{t-1})`` with the state components concatenated into
``s (B, S)``, ``S = sum(S_k)``, the step Jacobian of sample b is ``J_b = d s_t / d s_{t-1}``
``(S, S)``. Its spectral norm ``sigma_b = ||J_b||_2`` bounds how much one step can grow the
gradient; Pascanu et al. (2013) show ``sigma < 1`` along the trajectory is sufficient for the
gradient to vanish and ``sigma > 1`` necessary for it to explode.

Power iteration on ``J^T J`` needs only Jacobian-vector products (forward mode, ``u = J v``)
and vector-Jacobian products (reverse mode, ``w = J^T u``), never ``J`` itself:

    v <- w / ||w||,   w = J^T (J v),   sigma ~ sqrt(||w||)   (||v|| = 1)

The samples of a batch do not interact inside a cell, so ``J`` of the whole batch is block
diagonal and one batched iteration runs B independent power iterations.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.cells.base import RecurrentCell, State
from rnnkit.layers import Recurrent
from rnnkit.layers.engine import run_stack
from rnnkit.scan.backends import SequentialBackend

__all__ = ["jacobian_spectral_norm", "trajectory_jacobian_norms"]


def jacobian_spectral_norm(
    cell: RecurrentCell, x_proj: Tensor, state: State, *, iters: int = 20, generator: torch.Generator | None = None
) -> Tensor:
    """Estimate ``||d s_t / d s_{t-1}||_2`` for each sample: ``(B,)``.

    ``x_proj (B, P)`` is ``cell.project_input(x_t)``, ``state`` the state before the step. The
    estimate approaches the true norm from below as ``iters`` grows."""
    sizes = [s.size(-1) for s in state]
    s0 = torch.cat([s.detach() for s in state], dim=-1)  # (B, S)
    xp = x_proj.detach()

    def step(s: Tensor) -> Tensor:
        parts = tuple(torch.split(s, sizes, dim=-1))
        _, new = cell.step(xp, parts)
        return torch.cat(new, dim=-1)  # (B, S)

    _, vjp_fn = torch.func.vjp(step, s0)
    v = torch.randn(s0.shape, generator=generator, dtype=s0.dtype).to(s0.device)
    v = v / v.norm(dim=-1, keepdim=True)
    sigma = torch.zeros(s0.size(0), dtype=s0.dtype, device=s0.device)
    for _ in range(iters):
        (w,) = vjp_fn(torch.func.jvp(step, (s0,), (v,))[1])  # (B, S): J^T J v
        norm = w.norm(dim=-1, keepdim=True)  # (B, 1) ~ sigma^2
        sigma = norm.squeeze(-1).sqrt()
        v = w / norm.clamp_min(torch.finfo(w.dtype).tiny)
    return sigma.detach()


def trajectory_jacobian_norms(
    layer: Recurrent, x: Tensor, *, iters: int = 10, stride: int = 1, generator: torch.Generator | None = None
) -> Tensor:
    """Estimated ``||J_t||_2`` along the trajectory of ``x`` for every cell of ``layer``:
    ``(N, ceil(T / stride))`` (mean over the batch), at steps ``0, stride, 2 stride, ...`` of
    each cell's own processing order. Zero initial state, no lengths, no dropout. The
    trajectory comes from the stack driver (its ``on_step`` seam records each step's input
    projection and the state before it)."""
    x, _, _ = layer._check(x, None, None)  # (T, B, I)
    seen: list[list[tuple[Tensor, State]]] = []  # per cell: (x_proj_t, state before step t)

    def record(index: int, t: int, xp: Tensor, old: State, new: State) -> State:
        if t == 0:
            seen.append([])
        if t % stride == 0:
            seen[index].append((xp, old))
        return new

    with torch.no_grad():
        run_stack(layer.cells, x, None, None, num_layers=layer.num_layers, directions=layer.directions,
                  merge=layer.merge, backend=SequentialBackend(record))
    result = [
        torch.stack([jacobian_spectral_norm(cell, xp, old, iters=iters, generator=generator).mean()
                     for xp, old in steps])
        for cell, steps in zip(layer.cells, seen, strict=True)
    ]
    return torch.stack(result)  # (N, T')
