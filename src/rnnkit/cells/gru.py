"""The gated recurrent unit, in PyTorch's (and cuDNN's) formulation.

    r_t = sigmoid(x_t W_ir^T + b_ir + h_{t-1} W_hr^T + b_hr)
    z_t = sigmoid(x_t W_iz^T + b_iz + h_{t-1} W_hz^T + b_hz)
    n_t = tanh(x_t W_in^T + b_in + r_t * (h_{t-1} W_hn^T + b_hn))
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

Cho et al., "Learning phrase representations using RNN encoder-decoder", 2014. Deviation from
the paper (shared with torch.nn.GRU): the reset gate multiplies ``h W_hn^T + b_hn`` after the
matmul rather than ``h`` before it, which lets one GEMM serve all three gates. Gate layout in
``weight_ih``/``weight_hh`` rows: r, z, n.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.cells.base import GatedWeightsCell, State


class GRUCell(GatedWeightsCell):
    """GRU cell. Shapes: x ``(B, I)``, state ``(h,)`` with h ``(B, H)``, output y = h."""

    fused_mode = "GRU"
    gate_layout = "rzn"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.output_size = hidden_size
        self.state_sizes = (hidden_size,)
        self.config = dict(input_size=input_size, hidden_size=hidden_size, bias=bias)
        self._make_weights(3, input_size, hidden_size, hidden_size, bias, device, dtype)
        self.reset_parameters()

    def project_input(self, x: Tensor) -> Tensor:
        # b_hh cannot be folded in: b_hn sits inside r * (...).
        return torch.nn.functional.linear(x, self.weight_ih, self.bias_ih)  # (..., 3H)

    def step(self, x_proj: Tensor, state: State) -> tuple[Tensor, State]:
        (h,) = state
        H = self.hidden_size
        if self.bias_hh is None:
            hh = h @ self.weight_hh.t()  # (B, 3H)
        else:
            hh = torch.addmm(self.bias_hh, h, self.weight_hh.t())  # (B, 3H)
        rz = torch.sigmoid(x_proj[:, : 2 * H] + hh[:, : 2 * H])  # (B, 2H)
        r, z = rz[:, :H], rz[:, H:]
        n = torch.tanh(torch.addcmul(x_proj[:, 2 * H :], r, hh[:, 2 * H :]))  # (B, H)
        h = torch.lerp(n, h, z)  # (1 - z) * n + z * h
        return h, (h,)
