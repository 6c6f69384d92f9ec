"""The sequential scan: a Python loop over time steps, the reference every faster path is
checked against.

Everything here is time-major: ``x_proj`` is ``(T, B, P)``. The loop runs over
``x_proj.unbind(0)``, never ``x[t]`` on a tensor that needs grad, which would make backward
O(T^2) in memory traffic.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.cells.base import RecurrentCell, State


def length_mask(lengths: Tensor, steps: int) -> Tensor:
    """``mask[t, b] = t < lengths[b]``: ``(T, B)`` bool on ``lengths``' device."""
    return torch.arange(steps, device=lengths.device).unsqueeze(1) < lengths.unsqueeze(0)


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of a time-major ``(T, B, ...)`` tensor within its own length.

    Position ``t < lengths[b]`` goes to ``lengths[b] - 1 - t``; padding stays where it is. The
    map is its own inverse, so the same call puts a reversed output back in order.
    """
    if lengths is None:
        return x.flip(0)
    steps = x.size(0)
    t = torch.arange(steps, device=x.device).unsqueeze(1)  # (T, 1)
    lengths = lengths.to(x.device).unsqueeze(0)  # (1, B)
    index = torch.where(t < lengths, lengths - 1 - t, t)  # (T, B)
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, index)


def sequential_scan(
    cell: RecurrentCell, x_proj: Tensor, state: State, lengths: Tensor | None = None
) -> tuple[Tensor, State]:
    """Run ``cell.step`` over ``x_proj (T, B, P)`` from ``state``.

    With ``lengths``, sequence ``b`` stops at step ``lengths[b]``: its state is frozen from then
    on (so the returned state is the one at its own end) and its outputs there are zero.
    Returns ``(outputs (T, B, O), final state)``. A cell with per-sequence noise (recurrent
    dropout, :mod:`rnnkit.cells.options`) gets ``begin_sequence(B, device, dtype)`` first.
    """
    steps = x_proj.size(0)
    begin = getattr(cell, "begin_sequence", None)
    if begin is not None:
        begin(x_proj.size(1), x_proj.device, x_proj.dtype)
    active_until = steps
    if lengths is not None:
        lengths = lengths.to(x_proj.device)
        min_len = int(lengths.min())
        if min_len < steps:
            active_until = min_len
            masks = length_mask(lengths, steps).unsqueeze(-1).unbind(0)  # T x (B, 1)
    outputs = []
    for t, xp in enumerate(x_proj.unbind(0)):
        y, new_state = cell.step(xp, state)
        if t >= active_until:  # some sequences have ended: keep their state, zero their output
            m = masks[t]
            state = tuple(torch.where(m, n, o) for n, o in zip(new_state, state, strict=True))
            y = y.masked_fill(~m, 0.0)
        else:
            state = new_state
        outputs.append(y)
    return torch.stack(outputs), state  # (T, B, O)
