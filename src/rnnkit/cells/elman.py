"""The simple (Elman) RNN cell.

    h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),   act = tanh or relu

Elman, "Finding structure in time", Cognitive Science 14 (1990). Same parameters and result as
``torch.nn.RNNCell``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.cells.base import GatedWeightsCell, State

_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


class ElmanCell(GatedWeightsCell):
    """Elman RNN cell. ``nonlinearity`` is ``"tanh"`` or ``"relu"``.

    Shapes: x ``(B, I)``, state ``(h,)`` with h ``(B, H)``, output y = h ``(B, H)``.
    """

    gate_layout = "h"

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
        device=None, dtype=None,
    ) -> None:
        super().__init__()
        if nonlinearity not in _ACTIVATIONS:
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.output_size = hidden_size
        self.state_sizes = (hidden_size,)
        self.nonlinearity = nonlinearity
        self.config = dict(input_size=input_size, hidden_size=hidden_size, bias=bias, nonlinearity=nonlinearity)
        self._act = _ACTIVATIONS[nonlinearity]
        self._make_weights(1, input_size, hidden_size, hidden_size, bias, device, dtype)
        self.reset_parameters()

    @property
    def fused_mode(self) -> str:  # type: ignore[override]
        return "RNN_TANH" if self.nonlinearity == "tanh" else "RNN_RELU"

    def project_input(self, x: Tensor) -> Tensor:
        return self._project_summed_bias(x)  # (..., H)

    def step(self, x_proj: Tensor, state: State) -> tuple[Tensor, State]:
        (h,) = state
        h = self._act(torch.addmm(x_proj, h, self.weight_hh.t()))  # (B, H)
        return h, (h,)
