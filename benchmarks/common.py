"""Shared timing for the benchmark scripts: warm up, then time the candidates interleaved (so
drift in machine load hits all of them alike), each round starting one case later (so no case
always runs right after the same neighbour), and report medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def _sync() -> None:
    """Wait for queued GPU work, so that a time covers the kernels and not just their launch."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_interleaved(fns: dict[str, Callable[[], None]], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each function, measured round-robin with a rotating start."""
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    _sync()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            start = time.perf_counter()
            fns[name]()
            _sync()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def parse_size(text: str) -> tuple[int, int, int, int]:
    """``"B32,T256,I256,H256"`` -> (32, 256, 256, 256)."""
    parts = dict((p[0].upper(), int(p[1:])) for p in text.split(","))
    return parts["B"], parts["T"], parts["I"], parts["H"]
