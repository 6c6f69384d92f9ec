"""Backends: the ways one layer (one or two directions) runs over time, as objects in one table.

Each backend answers three questions (the protocol the driver, ``explain()`` and the tests use):

* ``unavailable(cells, x, requested) -> str | None``: why it cannot run this layer on ``x``
  (``None`` if it can); ``requested`` is True when the user forced it by name;
* ``describe(cells, x) -> str``: how it runs the layer, for ``explain()``;
* ``run_layer(cells, x, states, lengths, noise) -> (outputs, states)``: one layer over
  time-major ``x (T, B, *F)``; ``states[d]`` and ``noise[d]`` belong to direction ``d`` (1 =
  reversed, which starts at each sequence's own last element); returns the per-direction
  outputs ``(T, B, *O)`` (zero at padded steps) and final states.

:data:`BACKENDS` lists them in the order ``backend="auto"`` tries them; the sequential reference
comes last and runs every cell. Nothing here parses a label: a backend is found by its
``name`` (:func:`get_backend`), and an unknown name is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from rnnkit.cells._trace import graph_capture, traceable_needed, transform_active
from rnnkit.cells.base import RecurrentCell, State
from rnnkit.scan.fast import fast_project, fast_scan, fast_unavailable
from rnnkit.scan.fused import fused_layer, fused_unavailable
from rnnkit.scan.parallel import fused_min_scan_label, minimal_scan
from rnnkit.scan.sequential import reverse_padded, sequential_scan
from rnnkit.scan.triton import triton_label, triton_scan, triton_unavailable

__all__ = [
    "BACKENDS", "BACKEND_NAMES", "Backend", "FastBackend", "FusedBackend", "ParallelBackend", "SequentialBackend",
    "TritonBackend", "get_backend",
]


class Backend:
    """Base of every backend; subclasses set ``name`` and override what differs."""

    name: str = ""

    def unavailable(self, cells: Sequence[RecurrentCell], x: Tensor, requested: bool = False) -> str | None:
        return None

    def describe(self, cells: Sequence[RecurrentCell], x: Tensor) -> str:
        return self.name

    def run_layer(
        self, cells: Sequence[RecurrentCell], x: Tensor, states: Sequence[State], lengths: Tensor | None,
        noise: Sequence[Tensor | None],
    ) -> tuple[list[Tensor], list[State]]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<backend {self.name}>"


class _PerDirection(Backend):
    """A backend that projects the input and scans each direction on its own."""

    def project(self, cell: RecurrentCell, x: Tensor) -> tuple[Tensor, list | None]:
        """``(x_proj, keeps)``: keeps are the zoneout keep factors where the backend takes them
        apart from ``x_proj`` (:func:`rnnkit.scan.fast.fast_project`), else None."""
        return cell.project_input(x), None

    def scan(self, cell: RecurrentCell, x_proj: Tensor, state: State, lengths: Tensor | None,
             noise: Tensor | None, keeps: list | None = None) -> tuple[Tensor, State]:
        raise NotImplementedError

    def run_layer(self, cells, x, states, lengths, noise):
        outputs, finals = [], []
        for d, (cell, st, nz) in enumerate(zip(cells, states, noise, strict=True)):
            x_proj, keeps = self.project(cell, x)  # (T, B, P): one GEMM for every step
            if d == 1:  # a mask travels with its step, as inside x_proj
                x_proj = reverse_padded(x_proj, lengths)
                if keeps is not None:
                    keeps = [reverse_padded(k, lengths) if isinstance(k, Tensor) else k for k in keeps]
            y, st = self.scan(cell, x_proj, st, lengths, nz, keeps)
            outputs.append(reverse_padded(y, lengths) if d == 1 else y)
            finals.append(st)
        return outputs, finals


def _has_parallel(cell: RecurrentCell) -> bool:
    """A linear recurrence (minGRU/minLSTM) or a cell with its own ``parallel_scan`` (DEER)."""
    return getattr(cell, "linear_recurrence", False) or getattr(cell, "parallel_scan", None) is not None


class FusedBackend(Backend):
    """torch's multi-step kernels (``torch._VF``): oneDNN/ATen on CPU, cuDNN on GPU."""

    name = "fused"

    def unavailable(self, cells, x, requested=False):
        reason = fused_unavailable(list(cells), x)
        if reason is not None or requested:
            return reason
        if transform_active(x):
            return "a torch.func transform (vmap/grad) is active; torch's RNN kernels have no batching rule"
        compiling = torch.compiler.is_compiling() and not torch.compiler.is_exporting()
        if compiling and x.device.type == "cpu":
            # measured with torch 2.13: inductor unrolls torch's CPU GRU/RNN kernels step by step
            # (minutes to compile at T=256) and fails on its LSTM kernel in inference
            # (aten.mkldnn_rnn_layer: "expected Tensor()")
            return ("under torch.compile on CPU, inductor unrolls torch's RNN kernels step by step (GRU/RNN) "
                    "or fails on them (LSTM inference); the fast engine's custom op, one node per layer, runs instead")
        return None

    def describe(self, cells, x):
        return f"fused (torch vendor kernel, {'cuDNN' if x.device.type == 'cuda' else 'oneDNN/ATen'})"

    def run_layer(self, cells, x, states, lengths, noise):
        return fused_layer(list(cells), x, list(states), lengths)


class ParallelBackend(_PerDirection):
    """The cells' own whole-sequence scan in time (minGRU/minLSTM's log-space scan, DEER)."""

    name = "parallel"

    def unavailable(self, cells, x, requested=False):
        serial = [c for c in cells if not _has_parallel(c)]
        if serial:
            return f"{type(serial[0]).__name__} has no parallel_scan (its step depends nonlinearly on the state)"
        untraceable = [c for c in cells if not getattr(c, "parallel_traceable", True)]
        if untraceable and traceable_needed(x) and not graph_capture(x):
            return (f"{type(untraceable[0]).__name__}'s parallel scan stops on a data-dependent test, which "
                    "torch.func transforms and TorchScript tracing cannot trace (under torch.compile/export "
                    "it runs as a custom op)")
        return None

    def describe(self, cells, x):
        labels = {fused_min_scan_label(c, x) if getattr(c, "linear_recurrence", False) else None for c in cells}
        if len(labels) == 1 and None not in labels:
            return f"parallel (whole-sequence scan in time, {labels.pop()})"
        return "parallel (whole-sequence scan in time)"

    def scan(self, cell, x_proj, state, lengths, noise, keeps=None):
        if getattr(cell, "linear_recurrence", False):
            return minimal_scan(cell, x_proj, state, lengths)
        return cell.parallel_scan(x_proj, state, lengths)


class TritonBackend(_PerDirection):
    """rnnkit's Triton kernels for each step's elementwise work (CUDA)."""

    name = "triton"

    def unavailable(self, cells, x, requested=False):
        if traceable_needed(x) and not graph_capture(x):
            return ("a torch.func transform or TorchScript tracing is looking through the layer, which the "
                    "Triton kernels do not support; the fast engine's plain form runs instead")
        return triton_unavailable(list(cells), x, requested=requested)

    def describe(self, cells, x):
        return triton_label(list(cells), x)

    def project(self, cell, x):
        return fast_project(cell, x)

    def scan(self, cell, x_proj, state, lengths, noise, keeps=None):
        return triton_scan(cell, x_proj, state, lengths, noise, keeps)


class FastBackend(_PerDirection):
    """rnnkit's engine: one autograd Function per layer and direction with a hand-written backward;
    a custom op under compile/export (:mod:`rnnkit.scan.fast.ops`) and its plain form under
    torch.func transforms and TorchScript tracing (:mod:`rnnkit.scan.fast.reference`)."""

    name = "fast"

    def unavailable(self, cells, x, requested=False):
        return fast_unavailable(list(cells), x)

    def describe(self, cells, x):
        if graph_capture(x):
            return "fast (rnnkit engine as custom ops: one rnnkit:: node per layer and direction in the graph)"
        if traceable_needed(x):
            return ("fast (rnnkit engine, traceable form: the same recurrence in plain torch ops, because a "
                    "torch.func transform or TorchScript tracing is looking through it)")
        steps = ""
        if x.device.type == "cpu":
            from rnnkit.scan.fast.native import native_ops, native_unavailable

            steps = ("; its time loops in C++" if native_ops() is not None
                     else f"; its time loops in Python, since {native_unavailable()}")
        return ("fast (rnnkit engine: one autograd Function per layer and direction, hand-written backward "
                f"through time; double backward differentiates its plain form{steps})")

    def project(self, cell, x):
        return fast_project(cell, x)

    def scan(self, cell, x_proj, state, lengths, noise, keeps=None):
        return fast_scan(cell, x_proj, state, lengths, noise, keeps)


class SequentialBackend(_PerDirection):
    """The reference: a Python loop of ``cell.step`` over time, plain autograd.

    ``on_step(index, t, x_proj_t, old_state, new_state) -> state``, when given, sees each step
    of cell ``index`` (``layer * directions + direction``) at step ``t`` of its own processing
    order, and may replace the new state as it leaves the cell: the seam of the gradient probes
    and the Jacobian diagnostics (:mod:`rnnkit.diagnostics`). Use a fresh instance per call."""

    name = "sequential"

    def __init__(self, on_step: Callable[..., State] | None = None) -> None:
        self.on_step = on_step
        self._cell_index = 0

    def scan(self, cell, x_proj, state, lengths, noise, keeps=None):
        hook = None
        if self.on_step is not None:
            index, self._cell_index = self._cell_index, self._cell_index + 1
            hook = lambda t, xp, old, new: self.on_step(index, t, xp, old, new)  # noqa: E731
        return sequential_scan(cell, x_proj, state, lengths, noise=noise, on_step=hook)


#: every backend, in the order ``backend="auto"`` tries them (the reference last)
BACKENDS: tuple[Backend, ...] = (FusedBackend(), ParallelBackend(), TritonBackend(), FastBackend(),
                                 SequentialBackend())
BACKEND_NAMES: tuple[str, ...] = ("auto", *(b.name for b in BACKENDS))
_BY_NAME = {b.name: b for b in BACKENDS}


def get_backend(name: str) -> Backend:
    """The backend called ``name``; ValueError naming the choices for anything else."""
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {name!r}") from None
