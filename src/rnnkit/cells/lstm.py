"""Long short-term memory, with an optional output projection.

    i_t = sigmoid(x_t W_ii^T + h_{t-1} W_hi^T + b_i)      f_t = sigmoid(... W_if, W_hf, b_f)
    g_t = tanh(x_t W_ig^T + h_{t-1} W_hg^T + b_g)         o_t = sigmoid(... W_io, W_ho, b_o)
    c_t = f_t * c_{t-1} + i_t * g_t
    h_t = o_t * tanh(c_t)                 (then h_t = h_t W_hr^T when proj_size > 0)

Hochreiter & Schmidhuber, "Long short-term memory", 1997; forget gate from Gers et al. 2000;
projection from Sak et al., "LSTM RNN architectures for large scale acoustic modeling", 2014.
Same parameters and result as ``torch.nn.LSTM``; gate layout in the weight rows: i, f, g, o.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.cells.base import GatedWeightsCell, State


class LSTMCell(GatedWeightsCell):
    """LSTM cell. Shapes: x ``(B, I)``; state ``(h, c)`` with h ``(B, R)`` and c ``(B, H)``,
    where ``R = proj_size`` if ``proj_size > 0`` else ``H``; output y = h ``(B, R)``."""

    fused_mode = "LSTM"
    gate_layout = "ifgo"

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, proj_size: int = 0,
        device=None, dtype=None,
    ) -> None:
        super().__init__()
        if proj_size < 0 or (proj_size and proj_size >= hidden_size):
            raise ValueError(f"proj_size must be 0 or in [1, hidden_size={hidden_size}), got {proj_size}")
        self.input_size, self.hidden_size, self.proj_size = input_size, hidden_size, proj_size
        real = proj_size or hidden_size
        self.output_size = real
        self.state_sizes = (real, hidden_size)
        self.config = dict(input_size=input_size, hidden_size=hidden_size, bias=bias, proj_size=proj_size)
        self._make_weights(4, input_size, hidden_size, real, bias, device, dtype)
        if proj_size:
            self.weight_hr = nn.Parameter(torch.empty(proj_size, hidden_size, device=device, dtype=dtype))
        else:
            self.register_parameter("weight_hr", None)
        self.reset_parameters()

    def project_input(self, x: Tensor) -> Tensor:
        return self._project_summed_bias(x)  # (..., 4H)

    def step(self, x_proj: Tensor, state: State) -> tuple[Tensor, State]:
        h, c = state
        H = self.hidden_size
        gates = torch.addmm(x_proj, h, self.weight_hh.t())  # (B, 4H): i, f, g, o
        ifo = torch.sigmoid(gates)  # g's block is recomputed with tanh below; one kernel is cheaper
        g = torch.tanh(gates[:, 2 * H : 3 * H])
        i, f, o = ifo[:, :H], ifo[:, H : 2 * H], ifo[:, 3 * H :]
        c = torch.addcmul(f * c, i, g)  # (B, H)
        h = o * torch.tanh(c)
        if self.weight_hr is not None:
            h = h @ self.weight_hr.t()  # (B, R)
        return h, (h, c)

    def fused_weights(self) -> list[Tensor]:
        weights = super().fused_weights()
        return weights + [self.weight_hr] if self.weight_hr is not None else weights
