"""The stack driver shared by :class:`rnnkit.Recurrent` and the torch.nn drop-ins: layers,
directions, merging, dropout between layers, lengths, and the choice of scan per layer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rnnkit.cells.base import RecurrentCell, State
from rnnkit.scan.fast import fast_project, fast_scan, fast_unavailable
from rnnkit.scan.fused import fused_layer, fused_unavailable
from rnnkit.scan.sequential import reverse_padded, sequential_scan
from rnnkit.scan.triton import triton_label, triton_scan, triton_unavailable

MERGES = ("concat", "sum", "mul", "ave")
BACKENDS = ("auto", "fused", "parallel", "triton", "fast", "sequential")
#: the scans faster than the sequential reference, in the order ``backend="auto"`` tries them
FAST_PATHS = ("fused", "parallel", "triton", "fast")


@dataclass
class PathReport:
    """Which scan a layer takes, and why each faster one does not apply."""

    path: str
    rejected: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"path: {self.path}"]
        lines += [f"  not {name}: {why}" for name, why in self.rejected.items()]
        return "\n".join(lines)


def _parallel_unavailable(cells: Sequence[RecurrentCell], x: Tensor, requested: bool) -> str | None:
    serial_only = [c for c in cells if getattr(c, "parallel_scan", None) is None]
    if serial_only:
        return f"{type(serial_only[0]).__name__} has no parallel_scan (its step depends nonlinearly on the state)"
    return None


def _unavailable(name: str, cells: Sequence[RecurrentCell], x: Tensor, requested: bool) -> str | None:
    if name == "fused":
        return fused_unavailable(list(cells), x)
    if name == "parallel":
        return _parallel_unavailable(cells, x, requested)
    if name == "triton":
        return triton_unavailable(list(cells), x, requested=requested)
    return fast_unavailable(list(cells), x)


def _label(name: str, cells: Sequence[RecurrentCell], x: Tensor) -> str:
    if name == "fused":
        return f"fused (torch vendor kernel, {'cuDNN' if x.device.type == 'cuda' else 'oneDNN/ATen'})"
    if name == "parallel":
        return "parallel (whole-sequence scan in time)"
    if name == "triton":
        return triton_label(list(cells), x)
    return "fast (rnnkit engine: one autograd Function per layer, hand-written backward through time)"


def choose_path(cells: Sequence[RecurrentCell], x: Tensor, backend: str) -> PathReport:
    """Pick the scan for a stack of ``cells`` on input ``x`` under a ``backend`` request:
    ``"auto"`` takes the first of :data:`FAST_PATHS` that can run the layer, else the sequential
    reference; naming a path forces it (ValueError with the reason if it cannot run)."""
    rejected: dict[str, str] = {}
    for name in FAST_PATHS:
        if backend not in ("auto", name):
            rejected[name] = f"backend={backend!r} was requested"
            continue
        reason = _unavailable(name, cells, x, requested=backend == name)
        if reason is None:
            return PathReport(_label(name, cells, x), rejected)
        if backend == name:
            what = "the fused kernels cannot run this layer: " if name == "fused" else ""
            raise ValueError(f"backend={name!r} was requested but {what}{reason}")
        rejected[name] = reason
    return PathReport("sequential", rejected)


def merge_directions(outputs: Sequence[Tensor], merge: str) -> Tensor:
    if len(outputs) == 1:
        return outputs[0]
    fw, bw = outputs
    if merge == "concat":
        return torch.cat((fw, bw), dim=-1)
    if merge == "sum":
        return fw + bw
    if merge == "mul":
        return fw * bw
    return (fw + bw) * 0.5  # "ave"


def merged_size(cell: RecurrentCell, directions: int, merge: str) -> int:
    """Width of a layer's output, i.e. the next layer's input."""
    return cell.output_size * (directions if merge == "concat" else 1)


_SCANS = {"fast": fast_scan, "triton": triton_scan, "sequential": sequential_scan}


def run_stack(
    cells: Sequence[RecurrentCell],
    x: Tensor,
    state: Sequence[Tensor] | None,
    lengths: Tensor | None,
    *,
    num_layers: int,
    directions: int,
    merge: str = "concat",
    dropout: float = 0.0,
    training: bool = False,
    path: str = "sequential",
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Run a stack of cells over time-major ``x (T, B, I)``.

    ``cells[l * directions + d]`` is layer ``l``, direction ``d`` (1 = reversed). ``state`` is
    one tensor per cell state entry, each ``(num_layers * directions, B, S_k)``, or None for
    zeros. With ``lengths (B,)`` each sequence runs to its own end, both ways. Returns the last
    layer's merged outputs ``(T, B, O)`` and the stacked final states. ``path`` is the
    :class:`PathReport` path (its first word: fused, parallel, triton, fast or sequential).

    A cell with a parallel mode defines ``parallel_scan(x_proj, state, lengths) -> (y, state)``
    with the same contract as :func:`rnnkit.scan.sequential_scan`; the ``parallel`` path calls it.
    """
    fused = path.startswith("fused")
    batch = x.size(1)
    if lengths is not None and bool((lengths == x.size(0)).all()):
        lengths = None  # nothing is padded: skip the masking
    finals: list[State] = []
    for layer in range(num_layers):
        layer_cells = list(cells[layer * directions : (layer + 1) * directions])
        if state is None:
            layer_states = [c.initial_state(batch, device=x.device, dtype=x.dtype) for c in layer_cells]
        else:
            layer_states = [tuple(s[layer * directions + d] for s in state) for d in range(directions)]
        if fused:
            outputs, new_states = fused_layer(layer_cells, x, layer_states, lengths)
        else:
            outputs, new_states = [], []
            for d, (cell, st) in enumerate(zip(layer_cells, layer_states, strict=True)):
                project = fast_project if path.startswith(("fast", "triton")) else type(cell).project_input
                x_proj = project(cell, x)  # (T, B, P): one GEMM for every step
                if d == 1:
                    x_proj = reverse_padded(x_proj, lengths)
                if path.startswith("parallel"):
                    y, st = cell.parallel_scan(x_proj, st, lengths)
                else:
                    y, st = _SCANS.get(path.split(" ")[0], sequential_scan)(cell, x_proj, st, lengths)
                outputs.append(reverse_padded(y, lengths) if d == 1 else y)
                new_states.append(st)
        finals.extend(new_states)
        x = merge_directions(outputs, merge)
        if dropout > 0.0 and training and layer < num_layers - 1:
            x = torch.nn.functional.dropout(x, dropout, training=True)
    stacked = tuple(torch.stack(parts) for parts in zip(*finals, strict=True))  # each (L*D, B, S_k)
    return x, stacked
