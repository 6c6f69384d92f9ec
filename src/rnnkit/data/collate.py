"""Padding and length bucketing for variable-length batches."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import Sampler

__all__ = ["BucketBatchSampler", "pad", "rank_world"]


def pad(
    seqs: Sequence[Sequence[int] | Tensor], value: float = 0, dtype: torch.dtype = torch.long,
) -> tuple[Tensor, Tensor]:
    """Right-pad sequences into ``(B, T, ...)`` and return it with the lengths ``(B,)``.

    Each sequence is a list of ids or a tensor ``(T_i, ...)``; empty sequences are not allowed.
    """
    if not seqs:
        raise ValueError("pad() needs at least one sequence")
    tensors = [s if isinstance(s, Tensor) else torch.tensor(list(s), dtype=dtype) for s in seqs]
    lengths = torch.tensor([t.size(0) for t in tensors], dtype=torch.long)
    if int(lengths.min()) < 1:
        raise ValueError(f"pad() got an empty sequence at index {int(lengths.argmin())}")
    out = tensors[0].new_full((len(tensors), int(lengths.max()), *tensors[0].shape[1:]), value)  # (B, T, ...)
    for i, t in enumerate(tensors):
        out[i, : t.size(0)] = t
    return out, lengths


def rank_world() -> tuple[int, int]:
    """``(rank, world size)`` of this process under torch.distributed, ``(0, 1)`` without it."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of indices of similar length: shuffle, cut into pools of ``pool`` batches, sort
    each pool by length, split into batches, shuffle the batches. Less padding, still random.

    Under DDP each rank takes batches ``rank, rank + W, ...`` of the same order (the last round
    padded with the first batches, so every rank steps equally often); build the Trainer with
    ``use_distributed_sampler=False``."""

    def __init__(self, lengths: Sequence[int], batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 pool: int = 50) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.lengths, self.batch_size, self.shuffle = list(lengths), batch_size, shuffle
        self.seed, self.pool = seed, pool
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """The next iteration draws epoch ``epoch``'s order (Lightning calls this every epoch;
        without it each iteration is the next epoch)."""
        self.epoch = epoch

    def skip_next(self, batches: int) -> None:
        """The next iteration starts after its first ``batches`` batches (resume)."""
        self._skip = batches

    def __len__(self) -> int:
        batches = math.ceil(len(self.lengths) / self.batch_size)
        return math.ceil(batches / rank_world()[1])

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        n = len(self.lengths)
        order = torch.randperm(n, generator=g).tolist() if self.shuffle else list(range(n))
        span = self.batch_size * self.pool
        batches: list[list[int]] = []
        for s in range(0, n, span):
            chunk = sorted(order[s : s + span], key=lambda i: self.lengths[i])
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        rank, world = rank_world()
        if world > 1:
            batches = (batches + batches[: len(self) * world - len(batches)])[rank::world]
        skip, self._skip = self._skip, 0
        return iter(batches[skip:])
