"""Reuse of the fast engine's large CPU buffers across calls.

Why: torch's CPU allocator returns big blocks to the OS when they are freed, so every fresh
``(T, B, 4H)`` buffer is paid for again in page faults. Measured on the development machine: a new
32 MB tensor costs ~30 ms to fill, an existing one ~0.1 ms; one LSTM layer at B8 T2048 H128 touches
~150 MB per forward+backward. (CUDA has its own caching allocator; the pool is CPU-only.)

How: every buffer the engine allocates (internal ones and those it hands out, such as outputs and
gradients) is remembered; :func:`take` returns a remembered buffer of the same shape and dtype only
when nothing else holds its storage any more (storage use count), so a buffer the caller, autograd
or a ``.grad`` still references is never overwritten. At most :data:`MAX_BYTES` stay remembered
(oldest dropped first); :func:`clear` forgets them all.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["MAX_BYTES", "MIN_BYTES", "clear", "take"]

#: remembered bytes at most; set to 0 to disable reuse
MAX_BYTES = 1 << 30
#: smaller buffers come from the allocator as usual
MIN_BYTES = 1 << 20

_free: list[Tensor] = []  # oldest first
_use_count = getattr(torch._C, "_storage_Use_Count", None)


def _unshared(t: Tensor) -> bool:
    # 1 for the tensor kept here + 1 for the temporary storage object made to ask; the buffer
    # handed out is a separate tensor on the same storage, so while anyone holds it (or a view
    # of it) the count is higher
    return _use_count is not None and _use_count(t.untyped_storage()._cdata) <= 2


def take(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """An uninitialised tensor of ``shape`` with ``like``'s dtype and device."""
    nbytes = like.element_size()
    for s in shape:
        nbytes *= s
    if like.device.type != "cpu" or nbytes < MIN_BYTES or MAX_BYTES <= 0 or _use_count is None:
        return like.new_empty(shape)
    shape = tuple(shape)
    for k, kept in enumerate(_free):
        if kept.shape == shape and kept.dtype == like.dtype and _unshared(kept):
            del _free[k]
            _free.append(kept)  # most recently used last
            return kept.detach()  # a new tensor on the same storage: the caller's hold counts
    t = like.new_empty(shape)
    _free.append(t.detach())
    total = sum(b.numel() * b.element_size() for b in _free)
    while total > MAX_BYTES and _free:
        total -= _free[0].numel() * _free[0].element_size()
        del _free[0]
    return t


def clear() -> None:
    """Forget every remembered buffer (their memory is freed once unused)."""
    _free.clear()
