"""The Triton path's per-step loops replayed as CUDA graphs.

Why: a time loop of small kernels is launch-bound on a GPU. Measured on an H200 (B32 T256 H256,
forward + backward): about 0.3 ms per step whatever H, 5.3x cuDNN's LSTM for the layer-normalised
LSTM, while the kernels themselves run for a few microseconds. A CUDA graph records the loop's
launches once and replays them with one call (NVIDIA, "CUDA Graphs", CUDA C++ Programming Guide;
the same mechanism as ``torch.cuda.graphs`` and torch.compile's ``mode="reduce-overhead"``).

How: :func:`run` takes a loop as a function of its tensor inputs. The first call with a new
signature (shapes, dtypes, device, and the loop's scalars) runs as plain launches: a capture costs
about two plain runs, which a signature seen once (a batch of an unusual length) would not repay.
The second call runs it once on a side stream (so that Triton compiles its kernels and cuBLAS picks
its algorithms), then captures it on static copies of the inputs. From then on every call copies
its inputs into those copies, replays, and returns clones of the outputs (the next replay
overwrites the static ones). The last :data:`MAX_GRAPHS` signatures are
kept. Graphs are not used while another capture is running, for loops shorter than
:data:`MIN_STEPS`, or with ``RNNKIT_CUDA_GRAPHS=0``; the loop then runs as plain launches.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["MAX_GRAPHS", "MIN_STEPS", "clear", "enabled", "run"]

#: captured loops kept (oldest dropped first); each holds its static inputs, outputs and memory pool
MAX_GRAPHS = 16
#: shorter loops run as plain launches (a capture costs about as much as a few hundred launches)
MIN_STEPS = 8

_graphs: OrderedDict[tuple, _Graph] = OrderedDict()
_seen: OrderedDict[tuple, None] = OrderedDict()  # signatures run once as plain launches (the last 4 * MAX_GRAPHS)


class _Graph:
    def __init__(self, fn: Callable[..., tuple[Tensor | None, ...]], inputs: tuple[Tensor | None, ...],
                 scalars: tuple) -> None:
        self.inputs = tuple(None if t is None else t.detach().clone() for t in inputs)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.no_grad():
            fn(*self.inputs, *scalars)  # warm-up: Triton compiles, cuBLAS chooses, outside the capture
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self.outputs = fn(*self.inputs, *scalars)

    def __call__(self, inputs: tuple[Tensor | None, ...]) -> tuple[Tensor, ...]:
        for static, t in zip(self.inputs, inputs, strict=True):
            if static is not None:
                static.copy_(t)
        self.graph.replay()
        copies: dict[int, Tensor] = {}  # an output returned twice is cloned once
        return tuple(None if o is None else copies.setdefault(id(o), o.clone()) for o in self.outputs)


def enabled(x: Tensor, steps: int) -> bool:
    """Whether a loop of ``steps`` steps on ``x``'s device runs as a CUDA graph."""
    return (x.device.type == "cuda" and steps >= MIN_STEPS and os.environ.get("RNNKIT_CUDA_GRAPHS", "1") != "0"
            and not torch.cuda.is_current_stream_capturing())


def run(fn: Callable[..., tuple[Tensor | None, ...]], inputs: tuple[Tensor | None, ...], scalars: tuple,
        steps: int) -> tuple[Tensor | None, ...]:
    """``fn(*inputs, *scalars)``, replayed from a CUDA graph when :func:`enabled`. ``fn`` (a module-level
    function) must depend only on its inputs' values and on ``scalars`` (part of the signature), and
    allocate its outputs itself."""
    first = next(t for t in inputs if t is not None)
    if not enabled(first, steps):
        return fn(*inputs, *scalars)
    key = (fn.__qualname__, first.device.index, scalars,
           tuple(None if t is None else (tuple(t.shape), t.dtype) for t in inputs))
    graph = _graphs.get(key)
    if graph is None:
        if key not in _seen:  # the first sighting: plain launches
            _seen[key] = None
            while len(_seen) > 4 * MAX_GRAPHS:
                _seen.popitem(last=False)
            return fn(*inputs, *scalars)
        del _seen[key]
        graph = _graphs[key] = _Graph(fn, inputs, scalars)
        while len(_graphs) > MAX_GRAPHS:
            _graphs.popitem(last=False)
    _graphs.move_to_end(key)
    return graph(inputs)


def clear() -> None:
    """Forget every captured graph (and free their memory) and every signature seen."""
    _graphs.clear()
    _seen.clear()
