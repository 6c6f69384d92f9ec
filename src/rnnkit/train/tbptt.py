"""Truncated backpropagation through time (Williams & Peng, "An efficient gradient-based
algorithm for on-line training of recurrent network trajectories", Neural Computation 1990).

A sequence of T steps is cut into chunks of ``k`` steps; chunk ``j`` starts from the state the
previous chunk ended in, *detached*, so its gradient reaches back at most ``k`` steps
(TBPTT(k, k)): memory is O(k), and the model is updated after every chunk. The forward pass is
unchanged: the outputs equal those of one call on the whole sequence, and with ``k >= T`` the
training is full BPTT.

States are tensors whose batch dimension is 1 for 3-D ``(N, B, S)`` tensors (rnnkit and
torch.nn layers) and 0 for 2-D ``(B, S)`` ones, or tuples of such tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["Chunk", "TBPTTConfig", "detach_state", "reset_state", "tbptt_chunks"]


@dataclass
class TBPTTConfig:
    k: int                              # steps per chunk: how far back each gradient reaches
    carry_across_batches: bool = False  # stateful: batch n+1 continues batch n's streams per sample
                                        # (a batch's "reset" (B,) bool starts those samples afresh)

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"TBPTT chunk length k must be a positive int, got {self.k!r}")


def _batch_dim(t: Tensor) -> int:
    return 1 if t.dim() == 3 else 0


def map_state(state: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    if state is None:
        return None
    if isinstance(state, Tensor):
        return fn(state)
    return type(state)(map_state(s, fn) for s in state)


def detach_state(state: Any) -> Any:
    """The same state, cut from the graph: the next chunk's gradient stops here."""
    return map_state(state, Tensor.detach)


def _where_batch(keep_new: Tensor, new: Any, old: Any) -> Any:
    if isinstance(new, Tensor):
        shape = [1] * new.dim()
        shape[_batch_dim(new)] = -1
        return torch.where(keep_new.view(shape), new, old)
    return type(new)(_where_batch(keep_new, n, o) for n, o in zip(new, old, strict=True))


def reset_state(state: Any, reset: Tensor | None, batch: int) -> Any:
    """Zero the carried state of the samples flagged in ``reset (B,)``; a different batch size
    starts every sample afresh (``None``)."""
    first = state
    while not isinstance(first, Tensor):
        first = first[0]
    if first.size(_batch_dim(first)) != batch:
        return None
    if reset is None:
        return state
    keep = ~reset.to(device=first.device, dtype=torch.bool)
    return _where_batch(keep, state, map_state(state, torch.zeros_like))


@dataclass
class Chunk:
    """Steps ``[start, stop)``; ``lengths (B,)``: each sample's valid steps in it (None: all)."""

    start: int
    stop: int
    last: bool
    lengths: Tensor | None

    def run(self, run_model: Callable[..., tuple[Tensor, Any]], x: Tensor, state: Any) -> tuple[Tensor, Any]:
        """``run_model(x, lengths, state)`` on this chunk. Samples already finished (0 steps
        here) run one padded step and keep their previous state."""
        if self.lengths is None:
            return run_model(x, None, state)
        active = self.lengths > 0
        pred, new = run_model(x, self.lengths.clamp_min(1), state)
        if state is not None and not bool(active.all()):
            new = _where_batch(active, new, state)
        return pred, new

    def mask(self, pred: Tensor) -> Tensor | None:
        """``(B, stop - start)`` valid steps, or None without lengths."""
        if self.lengths is None:
            return None
        steps = torch.arange(self.stop - self.start, device=pred.device)
        return steps.unsqueeze(0) < self.lengths.to(pred.device).unsqueeze(1)


def tbptt_chunks(steps: int, k: int, lengths: Tensor | None = None) -> Iterator[Chunk]:
    """The chunks of a ``steps``-long batch, up to the longest sequence."""
    end = steps if lengths is None else int(lengths.max())
    for start in range(0, end, k):
        stop = min(start + k, steps)
        chunk_lengths = None if lengths is None else (lengths - start).clamp(0, stop - start)
        yield Chunk(start, stop, stop >= end, chunk_lengths)
