"""The independently recurrent neural network (IndRNN).

Li, Li, Cook, Zhu & Gao, "Independently recurrent neural network (IndRNN): building a longer and
deeper RNN", CVPR 2018, eq. 2::

    h_t = act(x_t W_ih^T + b_ih + u * (h_{t-1} * m))      act = relu (paper) or tanh

Each unit only sees its own past: ``u = weight_hh`` is a vector ``(H,)``, so the recurrence is
elementwise (no matmul per step) and ``|u_k|`` sets unit k's memory directly. With ``relu``,
gradients through T steps scale like ``u_k^T``: the paper keeps ``|u_k| <= 2^(1/T)``
(clip ``weight_hh`` after each optimiser step, e.g. ``cell.weight_hh.data.clamp_(-c, c)``).
``m`` is the optional recurrent-dropout mask; zoneout applies to ``h`` (see
:mod:`rnnkit.cells.options`). Deviation: the paper's batch normalisation between stacked
layers belongs to the model, not the cell.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rnnkit.cells._linear import linear
from rnnkit.cells.base import RecurrentCell, State
from rnnkit.cells.options import SequenceOptions

__all__ = ["IndRNNCell"]

_ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}


class IndRNNCell(SequenceOptions, RecurrentCell):
    """IndRNN cell. Parameters ``weight_ih (H, I)``, ``weight_hh (H,)`` (the recurrent vector
    ``u``, initialised ``U(*recurrent_init)``), ``bias_ih (H,)``.

    Shapes: x ``(B, I)``; state ``(h,)`` with h ``(B, H)``; output y = h ``(B, H)``.
    """

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, *, nonlinearity: str = "relu",
        recurrent_init: tuple[float, float] = (0.0, 1.0), recurrent_dropout: float = 0.0,
        zoneout: float | Sequence[float] = 0.0, device=None, dtype=None,
    ) -> None:
        super().__init__()
        if nonlinearity not in _ACTIVATIONS:
            raise ValueError(f"nonlinearity must be 'relu' or 'tanh', got {nonlinearity!r}")
        low, high = recurrent_init
        if not low <= high:
            raise ValueError(f"recurrent_init must be a range (low, high) with low <= high, got {recurrent_init!r}")
        factory = {"device": device, "dtype": dtype}
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, hidden_size
        self.state_sizes = (hidden_size,)
        self.nonlinearity, self.recurrent_init = nonlinearity, (float(low), float(high))
        self._act = _ACTIVATIONS[nonlinearity]
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, **factory))
        self.register_parameter("bias_ih", nn.Parameter(torch.empty(hidden_size, **factory)) if bias else None)
        self._init_options(recurrent_dropout, zoneout)
        self.config = dict(
            input_size=input_size, hidden_size=hidden_size, bias=bias, nonlinearity=nonlinearity,
            recurrent_init=self.recurrent_init, recurrent_dropout=self.recurrent_dropout, zoneout=self.zoneout,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()  # U(-1/sqrt(H), 1/sqrt(H)) for weight_ih and bias_ih
        nn.init.uniform_(self.weight_hh, *self.recurrent_init)

    def project_core(self, x: Tensor) -> Tensor:
        return linear(x, self.weight_ih, self.bias_ih)  # (..., H)

    def project_input(self, x: Tensor) -> Tensor:
        return self._append_noise(self.project_core(x))  # (..., H [+ zoneout mask])

    def step(self, x_proj: Tensor, state: State, noise: Tensor | None = None) -> tuple[Tensor, State]:
        x_proj, keeps = self.split_noise(x_proj)
        (h,) = state
        h_new = self._act(torch.addcmul(x_proj, self.weight_hh, self.recurrent_input(h, noise)))  # (B, H)
        (h_new,) = self.zoneout_state((h_new,), (h,), keeps)
        return h_new, (h_new,)

    def fast_inputs(self, x_proj: Tensor, noise: Tensor | None = None, keeps: list | None = None) -> dict:
        core, keeps = self.split_noise(x_proj) if keeps is None else (x_proj, keeps)
        return dict(
            family="indrnn", x_proj=core, weight_hh=self.weight_hh, activation=self.nonlinearity,
            drop=noise, keeps=keeps,
        )
