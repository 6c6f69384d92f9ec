"""The fused scan: torch's own multi-step RNN kernels (``torch._VF.lstm/gru/rnn_*``), which
run on oneDNN on CPU and cuDNN on GPU. They compute exactly the classic Elman/GRU/LSTM cells
(:attr:`rnnkit.cells.RecurrentCell.fused_mode`), so a layer made of those takes this path.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnkit.cells.base import RecurrentCell, State

_KERNELS = {
    "LSTM": torch._VF.lstm,
    "GRU": torch._VF.gru,
    "RNN_TANH": torch._VF.rnn_tanh,
    "RNN_RELU": torch._VF.rnn_relu,
}


def fused_unavailable(cells: list[RecurrentCell], x: Tensor) -> str | None:
    """Why the fused kernels cannot run this layer on ``x``, or ``None`` if they can."""
    for cell in cells:
        reason = cell.fused_reason()
        if reason is not None:
            return reason
    modes = {c.fused_mode for c in cells}
    if len(modes) != 1:
        return f"the cells mix kernels {sorted(modes)}"
    if len({c.config.get("bias") for c in cells}) != 1:
        return "the cells differ in bias"
    if x.device.type not in ("cpu", "cuda"):
        return f"no vendor kernel on device {x.device.type!r}"
    return None


def fused_layer(
    cells: list[RecurrentCell], x: Tensor, states: list[State], lengths: Tensor | None
) -> tuple[list[Tensor], list[State]]:
    """One layer, one or two directions, in one vendor-kernel call.

    ``x`` is ``(T, B, I)``, ``states[d]`` the state of direction ``d``, ``lengths (B,)`` or None
    (the sequences are then packed so that each direction starts and stops at its own ends).
    Returns the per-direction outputs ``(T, B, O)`` (zero at padded steps) and final states.
    """
    mode = cells[0].fused_mode
    bidirectional = len(cells) == 2
    weights = [w for cell in cells for w in cell.fused_weights()]
    has_bias = cells[0].config.get("bias", True)
    hx = tuple(torch.stack(parts) for parts in zip(*states, strict=True))  # each (D, B, S)
    if mode != "LSTM":
        hx = hx[0]
    kernel = _KERNELS[mode]
    if lengths is None:
        result = kernel(x, hx, weights, has_bias, 1, 0.0, False, bidirectional, False)
        out = result[0]
        new = result[1:]
    else:
        packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
        order, unorder = packed.sorted_indices, packed.unsorted_indices
        hx = tuple(h.index_select(1, order) for h in hx) if mode == "LSTM" else hx.index_select(1, order)
        result = kernel(packed.data, packed.batch_sizes, hx, weights, has_bias, 1, 0.0, False, bidirectional)
        out, _ = pad_packed_sequence(
            packed._replace(data=result[0]), total_length=x.size(0)
        )  # (T, B, D*O), original order
        new = tuple(h.index_select(1, unorder) for h in result[1:])
    out_size = cells[0].output_size
    outputs = list(out.split(out_size, dim=-1))  # D x (T, B, O)
    new_states = [tuple(h[d] for h in new) for d in range(len(cells))]
    return outputs, new_states
