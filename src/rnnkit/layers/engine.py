"""The stack driver shared by :class:`rnnkit.Recurrent`, the torch.nn drop-ins, the models'
decoders and the diagnostics: layers, directions, merging, dropout between layers, lengths, the
per-sequence noise, and the choice of backend.

One loop (:func:`run_stack`) runs whole sequences, streaming steps (a one-step sequence with the
noise of the sequence it continues, :class:`StepState`) and gradient probes (a sequential
backend with an ``on_step`` seam, :class:`rnnkit.scan.backends.SequentialBackend`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rnnkit.cells._trace import transform_active, values_readable
from rnnkit.cells.base import RecurrentCell, State
from rnnkit.scan.backends import BACKEND_NAMES, BACKENDS, Backend, get_backend

__all__ = [
    "BACKENDS", "BACKEND_NAMES", "MERGES", "PathReport", "StepState", "choose_backend", "draw_noise",
    "merge_directions", "merged_size", "run_stack",
]

MERGES = ("concat", "sum", "mul", "ave")


@dataclass
class PathReport:
    """Which backend a layer takes (``backend``, with its ``path`` description), and why each
    faster one does not apply (``rejected``: name -> reason)."""

    backend: Backend
    path: str
    rejected: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.backend.name

    def __str__(self) -> str:
        lines = [f"path: {self.path}"]
        lines += [f"  not {name}: {why}" for name, why in self.rejected.items()]
        return "\n".join(lines)


def choose_backend(
    cells: Sequence[RecurrentCell], x: Tensor, requested: str, cache: dict | None = None
) -> PathReport:
    """Pick the backend for a stack of ``cells`` on input ``x`` under a ``requested`` name.

    ``"auto"`` takes the first of :data:`BACKENDS` that can run the layer (the sequential
    reference runs every cell); a name forces that backend (ValueError with the reason if it
    cannot run); an unknown name is a ValueError. The choice depends on the input's device and
    dtype, training mode, grad mode and whether a torch.func transform is active; ``cache``
    (a dict the layer owns) keeps it per such key.
    """
    if requested != "auto":
        get_backend(requested)  # an unknown name fails here
    key = (requested, x.device, x.dtype, cells[0].training, torch.is_grad_enabled(), transform_active(x))
    compiling = torch.compiler.is_compiling()
    if cache is not None and not compiling:
        hit = cache.get(key)
        if hit is not None:
            return hit
    rejected: dict[str, str] = {}
    report = None
    for backend in BACKENDS:
        name = backend.name
        if requested not in ("auto", name):
            rejected[name] = f"backend={requested!r} was requested"
            continue
        reason = backend.unavailable(cells, x, requested=requested == name)
        if reason is None:
            report = PathReport(backend, backend.describe(cells, x), rejected)
            break
        if requested == name:
            what = "the fused kernels cannot run this layer: " if name == "fused" else ""
            raise ValueError(f"backend={name!r} was requested but {what}{reason}")
        rejected[name] = reason
    assert report is not None, "the sequential backend runs every cell"
    if cache is not None and not compiling:
        cache[key] = report
    return report


def merge_directions(outputs: Sequence[Tensor], merge: str, feature_dims: int = 1) -> Tensor:
    """Combine the two directions' outputs ``(T, B, O, *rest)``; ``concat`` joins the feature
    (channel) dim ``-feature_dims``."""
    if len(outputs) == 1:
        return outputs[0]
    fw, bw = outputs
    if merge == "concat":
        return torch.cat((fw, bw), dim=-feature_dims)
    if merge == "sum":
        return fw + bw
    if merge == "mul":
        return fw * bw
    return (fw + bw) * 0.5  # "ave"


def merged_size(cell: RecurrentCell, directions: int, merge: str) -> int:
    """Width of a layer's output, i.e. the next layer's input."""
    return cell.output_size * (directions if merge == "concat" else 1)


def draw_noise(cells: Sequence[RecurrentCell], batch: int, like: Tensor) -> tuple[Tensor | None, ...]:
    """Each cell's per-sequence noise (None where it has none), drawn now, in cell order."""
    return tuple(c.draw_noise(batch, like.device, like.dtype) for c in cells)


@dataclass
class StepState:
    """A sequence being stepped (:meth:`rnnkit.Recurrent.step`): the stacked state, as
    ``forward`` returns it (``(N, B, *S_k)`` per entry), and the noise drawn for the sequence
    (one entry per cell), which every later step reuses."""

    state: tuple[Tensor, ...]
    noise: tuple[Tensor | None, ...]

    def index_select(self, dim: int, index: Tensor) -> StepState:
        """The rows ``index`` of the batch (``dim`` must be 0, the batch of a decoding state),
        e.g. to reorder beams."""
        if dim != 0:
            raise ValueError(f"StepState.index_select reorders the batch: dim must be 0, got {dim}")
        return StepState(
            tuple(s.index_select(1, index) for s in self.state),
            tuple(None if n is None else n.index_select(0, index) for n in self.noise),
        )

    def repeat_interleave(self, repeats: int, dim: int = 0) -> StepState:
        """Each row repeated ``repeats`` times in place (beam search's ``B -> B * K`` rows)."""
        if dim != 0:
            raise ValueError(f"StepState.repeat_interleave repeats batch rows: dim must be 0, got {dim}")
        return StepState(
            tuple(s.repeat_interleave(repeats, 1) for s in self.state),
            tuple(None if n is None else n.repeat_interleave(repeats, 0) for n in self.noise),
        )

    @property
    def shape(self) -> torch.Size:
        """``(B,)``: a stepping state is a batch of rows (what decoders check)."""
        return torch.Size([self.state[0].size(1)])

    @property
    def device(self) -> torch.device:
        return self.state[0].device

    def size(self, dim: int) -> int:
        return self.shape[dim]


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
    backend: Backend | str = "sequential",
    noise: Sequence[Tensor | None] | None = None,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Run a stack of cells over time-major ``x (T, B, *F)``.

    ``cells[l * directions + d]`` is layer ``l``, direction ``d`` (1 = reversed). ``state`` is
    one tensor per cell state entry, each ``(num_layers * directions, B, *S_k)``, or None for
    zeros. With ``lengths (B,)`` each sequence runs to its own end, both ways. ``noise`` holds
    each cell's per-sequence noise (drawn here when None). Returns the last layer's merged
    outputs ``(T, B, *O)`` and the stacked final states.
    """
    if isinstance(backend, str):
        backend = get_backend(backend)
    batch = x.size(1)
    if lengths is not None and values_readable() and bool((lengths == x.size(0)).all()):
        lengths = None  # nothing is padded: skip the masking
    feature_dims = cells[0].feature_dims
    finals: list[State] = []
    for layer in range(num_layers):
        layer_cells = list(cells[layer * directions : (layer + 1) * directions])
        if state is None:
            layer_states = [c.initial_state(batch, device=x.device, dtype=x.dtype, input_shape=tuple(x.shape[2:]))
                            for c in layer_cells]
        else:
            layer_states = [tuple(s[layer * directions + d] for s in state) for d in range(directions)]
        if noise is None:
            layer_noise = draw_noise(layer_cells, batch, x)
        else:
            layer_noise = tuple(noise[layer * directions : (layer + 1) * directions])
        outputs, new_states = backend.run_layer(layer_cells, x, layer_states, lengths, layer_noise)
        finals.extend(new_states)
        x = merge_directions(outputs, merge, feature_dims)
        if dropout > 0.0 and training and layer < num_layers - 1:
            x = torch.nn.functional.dropout(x, dropout, training=True)
    stacked = tuple(torch.stack(parts) for parts in zip(*finals, strict=True))  # each (L*D, B, *S_k)
    return x, stacked
