"""The fast engine's entry points: which cells it runs, and :func:`fast_scan`, a drop-in for
:func:`rnnkit.scan.sequential_scan` with the same contract (time-major ``x_proj (T, B, P)``,
lengths, state in and out).

A cell takes part by defining ``fast_inputs(x_proj) -> dict`` (``family``: ``"lstm"``,
``"gru"``, ``"elman"`` or ``"indrnn"``, its tensors, ``drop`` and ``keeps``); torch's three classic
cells are described here. A subclass that overrides ``step``, ``project_input`` or ``project_core`` below the class
that defined ``fast_inputs`` changes the math, and is refused, as for the vendor kernels.

Lengths become keep factors: a sequence that has ended keeps its state (``d = 1``), which is
zoneout's mechanism; its outputs are zeroed afterwards.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.cells._linear import linear
from rnnkit.cells._trace import values_readable
from rnnkit.cells.base import RecurrentCell, State
from rnnkit.cells.elman import ElmanCell
from rnnkit.cells.gru import GRUCell
from rnnkit.cells.lstm import LSTMCell
from rnnkit.scan.fast.gru import gru_sequence
from rnnkit.scan.fast.lstm import lstm_sequence
from rnnkit.scan.fast.simple import simple_sequence
from rnnkit.scan.sequential import length_mask

__all__ = ["cell_inputs", "cell_unavailable", "fast_project", "fast_scan", "fast_unavailable", "keep_factors"]


def _core_inputs(cell: RecurrentCell, x_proj: Tensor) -> dict:
    """``fast_inputs`` for torch's classic cells (exact classes only)."""
    if type(cell) is LSTMCell:
        return dict(family="lstm", x_proj=x_proj, weight_hh=cell.weight_hh, weight_hr=cell.weight_hr)
    if type(cell) is GRUCell:
        return dict(family="gru", x_proj=x_proj, weight_hh=cell.weight_hh, bias_hh=cell.bias_hh)
    return dict(family="elman", x_proj=x_proj, weight_hh=cell.weight_hh, activation=cell.nonlinearity)


def _step_owner(cls: type) -> type:
    return next(c for c in cls.__mro__ if {"project_input", "project_core", "step"} & c.__dict__.keys())


def cell_unavailable(cell: RecurrentCell) -> str | None:
    """Why the fast engine cannot run ``cell`` (None if it can)."""
    name = type(cell).__name__
    if type(cell) in (LSTMCell, GRUCell, ElmanCell):
        return None
    method = getattr(type(cell), "fast_inputs", None)
    if method is None:
        return f"the fast engine has no backward for {name} (it defines no fast_inputs)"
    definer = next(c for c in type(cell).__mro__ if "fast_inputs" in c.__dict__)
    if _step_owner(type(cell)) is not _step_owner(definer):
        return f"{name} overrides the step of a cell the fast engine knows"
    reason = getattr(cell, "fast_reason", None)
    return reason() if reason is not None else None


def fast_project(cell: RecurrentCell, x: Tensor) -> tuple[Tensor, list | None]:
    """``(cell.project_input(x), None)``; for torch's classic cells the same linear map into a
    reused buffer (:mod:`rnnkit.cells._linear`); for cells with zoneout options
    (:class:`rnnkit.cells.options.SequenceOptions`) the projection and its keep factors apart,
    ``cell.project_split(x)``, which :func:`fast_scan` takes as ``keeps``."""
    if type(cell) in (LSTMCell, ElmanCell):
        bias = None if cell.bias_ih is None else cell.bias_ih + cell.bias_hh
        return linear(x, cell.weight_ih, bias), None
    if type(cell) is GRUCell:
        return linear(x, cell.weight_ih, cell.bias_ih), None
    if hasattr(cell, "project_core") and hasattr(cell, "project_split"):
        return cell.project_split(x)
    return cell.project_input(x), None


def fast_unavailable(cells: list[RecurrentCell], x: Tensor) -> str | None:
    """Why the fast engine cannot run this layer on ``x``, or None if it can."""
    for cell in cells:
        reason = cell_unavailable(cell)
        if reason is not None:
            return reason
    return None


def cell_inputs(cell: RecurrentCell, x_proj: Tensor, noise: Tensor | None = None, keeps: list | None = None) -> dict:
    """The cell's ``fast_inputs`` for this sequence's ``noise``, with defaults filled in;
    ``keeps``: the zoneout keep factors when ``x_proj`` came from :func:`fast_project` without them."""
    if type(cell) in (LSTMCell, GRUCell, ElmanCell):
        spec = _core_inputs(cell, x_proj)
    elif keeps is not None:
        spec = cell.fast_inputs(x_proj, noise, keeps=keeps)
    else:
        spec = cell.fast_inputs(x_proj) if noise is None else cell.fast_inputs(x_proj, noise)
    spec.setdefault("keeps", [None] * len(cell.state_sizes))
    spec.setdefault("drop", None)
    return spec


def keep_factors(keeps: list, lengths: Tensor | None, steps: int, ref: Tensor) -> tuple[list, int]:
    """Per state entry a ``(T, B, S|1)`` keep tensor or None, and the first step it applies at."""
    pad = None
    keep_from = 0
    if lengths is not None:
        lengths = lengths.to(ref.device)
        keep_from = int(lengths.min()) if values_readable() else 0  # traced: keep factors at every step
        pad = (~length_mask(lengths, steps)).unsqueeze(-1)  # (T, B, 1): True once a sequence ended
    if any(k is not None for k in keeps):
        keep_from = 0
    out = []
    for k in keeps:
        if k is None:
            out.append(None if pad is None else pad.to(ref.dtype))
        elif isinstance(k, Tensor):
            out.append(k if pad is None else torch.where(pad, 1.0, k))
        else:  # eval-mode zoneout: the rate itself
            full = ref.new_full((steps, 1, 1), float(k))
            out.append(full if pad is None else torch.where(pad, 1.0, full))
    return out, keep_from


def fast_scan(
    cell: RecurrentCell, x_proj: Tensor, state: State, lengths: Tensor | None = None, noise: Tensor | None = None,
    keeps: list | None = None,
) -> tuple[Tensor, State]:
    """Run ``cell`` over ``x_proj (T, B, P)`` from ``state`` on the fast engine; same result as
    :func:`rnnkit.scan.sequential_scan` (``noise``: the sequence's recurrent-dropout mask;
    ``keeps``: the zoneout keep factors, when :func:`fast_project` split them off ``x_proj``).
    Returns ``(outputs (T, B, O), final state)``."""
    steps = x_proj.size(0)
    spec = cell_inputs(cell, x_proj, noise, keeps)
    xp = spec["x_proj"]
    keeps, keep_from = keep_factors(spec["keeps"], lengths, steps, xp)
    family = spec["family"]
    if family == "lstm":
        h0, c0 = state
        hs, c_last = lstm_sequence(
            xp, h0, c0, spec["weight_hh"], weight_hr=spec.get("weight_hr"), ln_hh=spec.get("ln_hh"),
            ln_cell=spec.get("ln_cell"), peephole=spec.get("peephole"), eps=spec.get("eps", 1e-5),
            drop=spec["drop"], keep_h=keeps[0], keep_c=keeps[1], keep_from=keep_from,
        )
        final: State = (hs[-1], c_last)
    elif family == "gru":
        hs = gru_sequence(
            xp, state[0], spec["weight_hh"], spec.get("bias_hh"), ln_hh=spec.get("ln_hh"), eps=spec.get("eps", 1e-5),
            drop=spec["drop"], keep=keeps[0], keep_from=keep_from,
        )
        final = (hs[-1],)
    elif family in ("elman", "indrnn"):
        hs = simple_sequence(
            xp, state[0], spec["weight_hh"], activation=spec.get("activation", "tanh"), drop=spec["drop"],
            keep=keeps[0], keep_from=keep_from,
        )
        final = (hs[-1],)
    else:
        raise ValueError(f"{type(cell).__name__}.fast_inputs names an unknown family {family!r}")
    if lengths is not None and keep_from < steps:
        hs = hs.masked_fill((~length_mask(lengths.to(hs.device), steps)).unsqueeze(-1), 0.0)
    return hs, final
