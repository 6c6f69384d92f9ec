"""The sequential scan: a Python loop over time steps, the reference every faster path is
checked against.

Everything here is time-major: ``x_proj`` is ``(T, B, P)``. The loop runs over
``x_proj.unbind(0)``, never ``x[t]`` on a tensor that needs grad, which would make backward
O(T^2) in memory traffic.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from rnnkit.cells._trace import values_readable
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
    cell: RecurrentCell, x_proj: Tensor, state: State, lengths: Tensor | None = None, *,
    noise: Tensor | None = None, on_step: Callable[[int, Tensor, State, State], State] | None = None,
) -> tuple[Tensor, State]:
    """Run ``cell.step`` over ``x_proj (T, B, *P)`` from ``state``.

    With ``lengths``, sequence ``b`` stops at step ``lengths[b]``: its state is frozen from then
    on (so the returned state is the one at its own end) and its outputs there are zero.
    Returns ``(outputs (T, B, *O), final state)``. ``noise`` is the sequence's noise
    (:meth:`~rnnkit.cells.RecurrentCell.draw_noise`, e.g. a recurrent-dropout mask), passed to
    every step. ``on_step(t, x_proj_t, old_state, new_state) -> state`` sees each step and may
    replace its new state before it is used (the diagnostics' seam); a cell that returns
    ``state[0]`` as its output gets the replaced ``state[0]`` as its output too.
    """
    steps = x_proj.size(0)
    active_until = steps
    if lengths is not None:
        lengths = lengths.to(x_proj.device)
        min_len = int(lengths.min()) if values_readable() else 0  # traced: mask every step
        if min_len < steps:
            active_until = min_len
            masks = length_mask(lengths, steps).unbind(0)  # T x (B,)
    outputs = []
    for t, xp in enumerate(x_proj.unbind(0)):
        y, new_state = cell.step(xp, state) if noise is None else cell.step(xp, state, noise)
        if on_step is not None:
            hooked = on_step(t, xp, state, new_state)
            if y is new_state[0]:
                y = hooked[0]
            new_state = hooked
        if t >= active_until:  # some sequences have ended: keep their state, zero their output
            m = masks[t]
            state = tuple(torch.where(_expand(m, n), n, o) for n, o in zip(new_state, state, strict=True))
            y = y.masked_fill(~_expand(m, y), 0.0)
        else:
            state = new_state
        outputs.append(y)
    return torch.stack(outputs), state  # (T, B, *O)


def _expand(mask: Tensor, like: Tensor) -> Tensor:
    """A per-sequence ``(B,)`` mask shaped to broadcast over ``like (B, *S)``."""
    return mask.view(-1, *([1] * (like.dim() - 1)))
