"""minGRU and minLSTM: recurrences whose gates read only the input, so that all time steps can be
computed at once by a parallel scan.

Feng, Tung, Ahmed, Bengio, Hajimirsadeghi, "Were RNNs All We Needed?" (2024), sections 3.1-3.2
and appendix B (log-space, with the activation ``g`` that keeps the states positive):

    g(x)     = x + 0.5 if x >= 0 else sigmoid(x)           log_g(x) = log(g(x))

    minGRU   z_t = sigmoid(k_t),  k_t = x_t W_iz^T + b_iz
             h~_t = g(x_t W_ih^T + b_ih)
             h_t = (1 - z_t) * h_{t-1} + z_t * h~_t
    minLSTM  f_t = sigmoid(x_t W_if^T + b_if),  i_t = sigmoid(x_t W_ii^T + b_ii)
             f'_t, i'_t = f_t / (f_t + i_t), i_t / (f_t + i_t)
             h_t = f'_t * h_{t-1} + i'_t * h~_t

Both are ``h_t = a_t * h_{t-1} + b_t`` with ``a, b`` known in advance. Log-space coefficients
(appendix B): minGRU ``log a = -softplus(k)``, ``log b = -softplus(-k) + log_g(v)``; minLSTM
with ``d = softplus(-k_f) - softplus(-k_i)`` (= log i - log f): ``log f' = -softplus(d)``,
``log i' = -softplus(-d)``.

Modes: ``step`` (streaming, one step) and ``parallel_scan`` (training), which agree to float
rounding. ``scan="log"`` runs the paper's log-space formulation through the chunked Heinsen
scan (:func:`rnnkit.scan.parallel.log_scan`); ``scan="linear"`` computes ``a = exp(log a)``
and ``b`` directly and uses :func:`rnnkit.scan.parallel.linear_scan` (no logarithms; a
training step is about 4x faster on CPU at T=4096, where torch's cumsum/logcumsumexp along time
are slow). On CUDA with triton installed, ``"linear"`` and ``"auto"`` run the fused Triton scan
(:mod:`rnnkit.scan.triton.min_scan`: 2.6 ms against the log scan's 7.3 ms a training step at
T=16,384, B8 H128, on an H200); without triton ``"auto"`` picks ``"log"`` on CUDA. On a CPU
``"auto"`` is ``"linear"``, run by the engine's C++ loop (``csrc/min_scan.cpp``: coefficients,
scan and adjoint in one pass each way) when it is built. All are stable for any T (no inf/nan;
tested at T = 65,536).

Deviations from the paper: ``h0`` may be any real (zeros by default; the paper takes ``log h0``
and so needs ``h0 > 0``); minLSTM keeps only ``h`` (``state = (h,)``, as in the paper). Weight
layout: ``weight_ih`` rows are z, h~ (minGRU) or f, i, h~ (minLSTM); no recurrent weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.cells.base import RecurrentCell, State

__all__ = ["MinGRUCell", "MinLSTMCell", "g", "log_g"]

SCANS = ("auto", "log", "linear")


def g(x: Tensor) -> Tensor:
    """``x + 0.5`` for ``x >= 0``, ``sigmoid(x)`` below: positive and continuous (appendix B)."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: Tensor) -> Tensor:
    """``log(g(x))`` without forming ``g``: ``log(relu(x) + 0.5)`` or ``-softplus(-x)``."""
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


class _MinimalCell(RecurrentCell):
    """Shared parts: input-only weights ``weight_ih (G*H, I)``, ``bias_ih (G*H)``, state ``(h,)``."""

    gates: int

    def __init__(self, input_size: int, hidden_size: int, bias: bool, scan: str, device, dtype) -> None:
        super().__init__()
        if scan not in SCANS:
            raise ValueError(f"scan must be one of {SCANS}, got {scan!r}")
        self.input_size, self.hidden_size, self.scan = input_size, hidden_size, scan
        self.output_size = hidden_size
        self.state_sizes = (hidden_size,)
        self.config = dict(input_size=input_size, hidden_size=hidden_size, bias=bias, scan=scan)
        factory = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(self.gates * hidden_size, input_size, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(self.gates * hidden_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
        self.reset_parameters()

    def project_input(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias_ih)  # (..., G*H)

    # subclasses: the coefficients of h_t = a_t h_{t-1} + b_t from the projected input
    def coefficients(self, x_proj: Tensor) -> tuple[Tensor, Tensor]:
        """``(a, b)``, each ``(..., H)``."""
        raise NotImplementedError

    def log_coefficients(self, x_proj: Tensor) -> tuple[Tensor, Tensor]:
        """``(log a, log b)``, each ``(..., H)``, computed in log space (appendix B)."""
        raise NotImplementedError

    #: a linear recurrence in the state: the parallel backend scans its coefficients
    #: (:func:`rnnkit.scan.parallel.minimal_scan`)
    linear_recurrence = True

    def step(self, x_proj: Tensor, state: State) -> tuple[Tensor, State]:
        a, b = self.coefficients(x_proj)  # (B, H) each
        h = torch.addcmul(b, a, state[0])
        return h, (h,)


class MinGRUCell(_MinimalCell):
    """minGRU (Feng et al. 2024): ``h_t = (1 - z_t) * h_{t-1} + z_t * g(h~_t)``, see the module
    docstring. Shapes: x ``(B, I)``, state ``(h,)`` with h ``(B, H)``, output y = h ``(B, H)``.
    ``weight_ih (2H, I)`` rows z, h~; ``scan`` picks the parallel scan ("auto", "log", "linear")."""

    gates = 2

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, scan: str = "auto", device=None, dtype=None
    ) -> None:
        super().__init__(input_size, hidden_size, bias, scan, device, dtype)

    def coefficients(self, x_proj: Tensor) -> tuple[Tensor, Tensor]:
        k, v = x_proj.chunk(2, dim=-1)  # (..., H) each
        return torch.sigmoid(-k), torch.sigmoid(k) * g(v)  # 1 - z, z * h~

    def log_coefficients(self, x_proj: Tensor) -> tuple[Tensor, Tensor]:
        k, v = x_proj.chunk(2, dim=-1)
        return -F.softplus(k), -F.softplus(-k) + log_g(v)  # log(1 - z), log z + log h~


class MinLSTMCell(_MinimalCell):
    """minLSTM (Feng et al. 2024): ``h_t = f'_t * h_{t-1} + i'_t * g(h~_t)`` with the gates
    normalised to sum to one, see the module docstring. Shapes as :class:`MinGRUCell`;
    ``weight_ih (3H, I)`` rows f, i, h~."""

    gates = 3

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, scan: str = "auto", device=None, dtype=None
    ) -> None:
        super().__init__(input_size, hidden_size, bias, scan, device, dtype)

    @staticmethod
    def _log_ratio(x_proj: Tensor) -> tuple[Tensor, Tensor]:
        kf, ki, v = x_proj.chunk(3, dim=-1)  # (..., H) each
        return F.softplus(-kf) - F.softplus(-ki), v  # d = log i - log f, and the candidate

    def coefficients(self, x_proj: Tensor) -> tuple[Tensor, Tensor]:
        d, v = self._log_ratio(x_proj)
        return torch.sigmoid(-d), torch.sigmoid(d) * g(v)  # f / (f + i), i / (f + i) * h~

    def log_coefficients(self, x_proj: Tensor) -> tuple[Tensor, Tensor]:
        d, v = self._log_ratio(x_proj)
        return -F.softplus(d), -F.softplus(-d) + log_g(v)
