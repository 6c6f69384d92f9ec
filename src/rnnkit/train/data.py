"""A resumable, DDP-aware data order for bit-identical resume and single-vs-multi-process parity.

:class:`EpochSampler` draws the order of epoch ``e`` from ``seed + e`` alone (no global RNG), and
shards it over DDP ranks by interleaving, like ``DistributedSampler``: rank ``r`` of ``W`` reads
positions ``r, r + W, r + 2W, ...`` of the permutation. With per-rank batch ``b = B / W``, the
union of the ranks' batch ``i`` is exactly the single-process batch ``i`` of size ``B``, so a mean
loss gives the same gradient on 1 or W processes.

:class:`ResumableLoader` is a ``DataLoader`` with ``state_dict``/``load_state_dict``, which
Lightning saves in checkpoints and restores before iterating: a run resumed in the middle of an
epoch continues with the very batch it would have seen next.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from rnnkit.data.collate import rank_world

__all__ = ["EpochSampler", "ResumableLoader"]


class EpochSampler(Sampler[int]):
    """Indices ``0 .. n-1``, shuffled by ``seed + epoch`` (or in order), this rank's share.

    The last incomplete round is padded with the first indices (like ``DistributedSampler``)
    so every rank gets the same count, unless ``drop_last``."""

    def __init__(self, n: int, *, shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        if n < 1:
            raise ValueError(f"EpochSampler needs a non-empty dataset, got n={n}")
        self.n, self.shuffle, self.seed, self.drop_last = n, shuffle, seed, drop_last
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_next(self, count: int) -> None:
        """The next iteration starts after its first ``count`` indices (resume)."""
        self._skip = count

    def _per_rank(self, world: int) -> int:
        return self.n // world if self.drop_last else -(-self.n // world)

    def __len__(self) -> int:
        return self._per_rank(rank_world()[1])

    def __iter__(self) -> Iterator[int]:
        rank, world = rank_world()
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        total = self._per_rank(world) * world
        if total > self.n:
            order = torch.cat([order, order[: total - self.n]])
        order = order[:total][rank::world]
        skip, self._skip = self._skip, 0
        return iter(order[skip:].tolist())


class ResumableLoader(DataLoader):
    """``DataLoader(dataset, batch_size, sampler=EpochSampler(...))`` whose position survives a
    checkpoint. Extra keyword arguments go to ``DataLoader`` (``collate_fn``, ``num_workers``...).

    Lightning fetches one batch ahead, so the loader cannot count what was *trained on* by
    itself; :class:`~rnnkit.train.TrainModule` binds it to the trainer's progress at the start of
    training (:meth:`bind`). Under DDP build the Trainer with ``use_distributed_sampler=False``
    (:func:`rnnkit.train.build_trainer` does): the sampler shards itself.
    """

    def __init__(
        self, dataset: Dataset, batch_size: int = 1, *, shuffle: bool = True, seed: int = 0, drop_last: bool = False,
        **kwargs: Any,
    ) -> None:
        # the iterator's base seed (for workers) comes from this generator, never the global RNG,
        # so creating an iterator does not shift the random stream that dropout draws from
        kwargs.setdefault("generator", torch.Generator().manual_seed(seed))
        if kwargs.get("batch_sampler") is not None:  # Lightning re-creating the loader to predict
            kwargs.pop("sampler", None)
            super().__init__(dataset, **kwargs)
        else:
            sampler = kwargs.pop("sampler", None) or EpochSampler(
                len(dataset), shuffle=shuffle, seed=seed, drop_last=drop_last
            )
            super().__init__(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **kwargs)
        self.seed, self.shuffle = seed, shuffle
        self._progress: Callable[[], tuple[int, int]] | None = None

    def bind(self, progress: Callable[[], tuple[int, int]]) -> None:
        """``progress() -> (epoch, batches of that epoch already trained on)``."""
        self._progress = progress

    def _order(self) -> tuple[Any, int] | None:
        """``(what draws the order, indices per batch)``: the EpochSampler, or a batch sampler
        with ``set_epoch``/``skip_next`` counted in batches (e.g. ``BucketBatchSampler``)."""
        if isinstance(self.sampler, EpochSampler):
            return self.sampler, self.batch_size
        bs = self.batch_sampler
        if hasattr(bs, "set_epoch") and hasattr(bs, "skip_next"):
            return bs, 1
        return None

    def state_dict(self) -> dict[str, int]:
        order = self._order()
        if order is None:
            return {"epoch": 0, "consumed": 0, "seed": self.seed, "batches": len(self)}
        epoch, consumed = self._progress() if self._progress is not None else (order[0].epoch, 0)
        return {"epoch": int(epoch), "consumed": int(consumed), "seed": self.seed, "batches": len(self)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("seed") != self.seed:
            raise ValueError(f"ResumableLoader: the checkpoint's data seed {state.get('seed')} is not {self.seed}")
        order = self._order()
        if order is None:
            return
        epoch, consumed = int(state["epoch"]), int(state["consumed"])
        if consumed >= len(self):
            epoch, consumed = epoch + 1, 0
        order[0].set_epoch(epoch)
        order[0].skip_next(consumed * order[1])
