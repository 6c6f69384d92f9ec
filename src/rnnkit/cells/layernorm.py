"""Layer-normalised LSTM and GRU cells, with recurrent dropout and zoneout.

LSTM (Ba, Kiros & Hinton, "Layer normalization", 2016, eqs. 20-22; the bias layout of haste's
``LayerNormLSTM``)::

    a_t   = (h_{t-1} * m) W_hh^T                                 m: recurrent-dropout mask
    pre_t = LN(x_t W_ih^T; ln_ih_weight, b_ih) + LN(a_t; ln_hh_weight, b_hh)        (B, 4H): i f g o
    i, f, o = sigmoid(pre_i), sigmoid(pre_f), sigmoid(pre_o);   g = tanh(pre_g)
    c~_t  = f * c_{t-1} + i * g
    h~_t  = o * tanh(LN(c~_t; ln_cell_weight, ln_cell_bias))     (then h~_t W_hr^T if proj_size)
    (h_t, c_t) = zoneout((h~_t, c~_t), (h_{t-1}, c_{t-1}))

GRU (the same normalisation of the two matmuls, in torch's GRU formulation)::

    hh_t = LN((h_{t-1} * m) W_hh^T; ln_hh_weight) + b_hh          (B, 3H): r z n
    xx_t = LN(x_t W_ih^T; ln_ih_weight) + b_ih
    r, z = sigmoid(xx_r + hh_r), sigmoid(xx_z + hh_z)
    n    = tanh(xx_n + r * hh_n)
    h~_t = (1 - z) * n + z * h_{t-1};   h_t = zoneout(h~_t, h_{t-1})

``LN(v; w, b) = (v - mean(v)) / sqrt(var(v) + eps) * w + b`` over the last dimension: all 4H (3H)
gate pre-activations together, as in the paper, and the H cell units. Symbols: B batch, I input
size, H hidden size, R = proj_size or H.

Deviation from the paper: the two gate LNs shift by ``b_ih`` and ``b_hh`` and there is no third
gate bias (the paper's two LN shifts and bias add up to one vector, so nothing is lost); this keeps
torch's parameter names, so a ``torch.nn.LSTM``/``GRU`` state dict loads into the shared weights.
``layer_norm=False`` gives exactly torch's LSTM/GRU step, so these classes also serve plain cells
with the regularisers (:mod:`rnnkit.cells.options`). Peepholes (Gers & Schmidhuber 2000) are an
option of the LSTM; see :class:`rnnkit.cells.peephole.PeepholeLSTMCell`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.cells._linear import linear, linear_norm
from rnnkit.cells.base import GatedWeightsCell, State
from rnnkit.cells.options import SequenceOptions

__all__ = ["LayerNormGRUCell", "LayerNormLSTMCell"]


class _NormedCell(SequenceOptions, GatedWeightsCell):
    """Parameters and options shared by the two cells."""

    gates: int

    def _setup(self, input_size, hidden_size, recurrent, bias, layer_norm, eps, recurrent_dropout, zoneout,
               device, dtype) -> None:
        factory = {"device": device, "dtype": dtype}
        self.input_size, self.hidden_size = input_size, hidden_size
        self.layer_norm, self.eps = bool(layer_norm), float(eps)
        self._make_weights(self.gates, input_size, hidden_size, recurrent, bias, device, dtype)
        if self.layer_norm:
            self.ln_ih_weight = nn.Parameter(torch.empty(self.gates * hidden_size, **factory))
            self.ln_hh_weight = nn.Parameter(torch.empty(self.gates * hidden_size, **factory))
        else:
            self.register_parameter("ln_ih_weight", None)
            self.register_parameter("ln_hh_weight", None)
        self._init_options(recurrent_dropout, zoneout)

    def reset_parameters(self) -> None:
        """torch.nn's U(-1/sqrt(H), 1/sqrt(H)) for the weights; LN gains 1 and shifts 0."""
        super().reset_parameters()
        for name, p in self.named_parameters(recurse=False):
            if name.startswith("ln_"):
                nn.init.ones_(p) if name.endswith("weight") else nn.init.zeros_(p)

    def _input_norm(self, x: Tensor, bias: Tensor | None) -> Tensor:
        if self.layer_norm:  # F.layer_norm(F.linear(x, W_ih), ...) into reused buffers
            return linear_norm(x, self.weight_ih, self.ln_ih_weight, bias, self.eps)  # (..., G*H)
        return linear(x, self.weight_ih, bias)

    def _recurrent(self, h: Tensor, bias: Tensor | None, noise: Tensor | None) -> Tensor:
        a = self.recurrent_input(h, noise) @ self.weight_hh.t()  # (B, G*H)
        if self.layer_norm:
            return F.layer_norm(a, (a.size(-1),), self.ln_hh_weight, bias, self.eps)
        return a if bias is None else a + bias

    def _ln_hh(self) -> tuple[Tensor, Tensor] | None:
        """The recurrent LN's (weight, shift) for the fast engine: the shift is ``b_hh`` (zeros
        without biases)."""
        if not self.layer_norm:
            return None
        return self.ln_hh_weight, self.bias_hh if self.bias_hh is not None else torch.zeros_like(self.ln_hh_weight)

    def fused_reason(self) -> str | None:
        on = [k for k in ("layer_norm", "peephole") if getattr(self, k, False)]
        on += [f"{k}={getattr(self, k)}" for k in ("recurrent_dropout", "zoneout") if any(
            p > 0 for p in (getattr(self, k) if isinstance(getattr(self, k), tuple) else (getattr(self, k),)))]
        if not on:
            return f"{type(self).__name__} is not a vendor-kernel cell (use LSTMCell/GRUCell for torch's kernel)"
        return f"torch's {'LSTM' if self.gates == 4 else 'GRU'} kernel has no {', '.join(on)}"


class LayerNormLSTMCell(_NormedCell):
    """LSTM with layer normalisation (``layer_norm=True``), optional peepholes, projection,
    recurrent dropout and zoneout. Gate layout in the weight rows: i, f, g, o (torch's).

    Args:
        layer_norm: normalise the input and recurrent gate pre-activations and the cell state.
        peephole: add diagonal peephole weights ``peephole_weight (3, H)`` (rows i, f, o).
        proj_size: as torch.nn.LSTM: ``h_t = h~_t W_hr^T`` of width ``proj_size``.
        eps: LN epsilon. recurrent_dropout: ``p`` of the per-sequence mask on ``h_{t-1}``.
        zoneout: ``p`` for both ``h`` and ``c``, or ``(p_h, p_c)``.
        forget_bias: set the forget-gate bias to this value (Gers et al. 2000; 1.0 is usual).
        chrono_init: ``T_max`` for chrono initialisation (Tallec & Ollivier 2018).

    Shapes: x ``(B, I)``; state ``(h (B, R), c (B, H))``; output y = h ``(B, R)``.
    """

    gates = 4
    gate_layout = "ifgo"

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, *, layer_norm: bool = True,
        peephole: bool = False, proj_size: int = 0, eps: float = 1e-5, recurrent_dropout: float = 0.0,
        zoneout: float | Sequence[float] = 0.0, forget_bias: float | None = None, chrono_init: int | None = None,
        device=None, dtype=None,
    ) -> None:
        super().__init__()
        if proj_size < 0 or (proj_size and proj_size >= hidden_size):
            raise ValueError(f"proj_size must be 0 or in [1, hidden_size={hidden_size}), got {proj_size}")
        factory = {"device": device, "dtype": dtype}
        real = proj_size or hidden_size
        self.proj_size, self.output_size, self.state_sizes = proj_size, real, (real, hidden_size)
        self._setup(input_size, hidden_size, real, bias, layer_norm, eps, recurrent_dropout, zoneout, device, dtype)
        self.peephole = bool(peephole)
        self.register_parameter(
            "weight_hr", nn.Parameter(torch.empty(proj_size, hidden_size, **factory)) if proj_size else None
        )
        self.register_parameter(
            "peephole_weight", nn.Parameter(torch.empty(3, hidden_size, **factory)) if peephole else None
        )
        if self.layer_norm:
            self.ln_cell_weight = nn.Parameter(torch.empty(hidden_size, **factory))
            self.ln_cell_bias = nn.Parameter(torch.empty(hidden_size, **factory))
        else:
            self.register_parameter("ln_cell_weight", None)
            self.register_parameter("ln_cell_bias", None)
        self.config = dict(
            input_size=input_size, hidden_size=hidden_size, bias=bias, layer_norm=self.layer_norm,
            peephole=self.peephole, proj_size=proj_size, eps=self.eps, recurrent_dropout=self.recurrent_dropout,
            zoneout=self.zoneout, forget_bias=forget_bias, chrono_init=chrono_init,
        )
        self.reset_parameters()
        self._init_gates(forget_bias, chrono_init)

    def project_core(self, x: Tensor) -> Tensor:
        bias = self.bias_ih if self.layer_norm or self.bias_ih is None else self.bias_ih + self.bias_hh
        return self._input_norm(x, bias)  # (..., 4H)

    def project_input(self, x: Tensor) -> Tensor:
        return self._append_noise(self.project_core(x))  # (..., 4H [+ zoneout masks])

    def step(self, x_proj: Tensor, state: State, noise: Tensor | None = None) -> tuple[Tensor, State]:
        x_proj, keeps = self.split_noise(x_proj)
        h, c = state
        H = self.hidden_size
        gates = x_proj + self._recurrent(h, self.bias_hh if self.layer_norm else None, noise)  # (B, 4H): i, f, g, o
        i_pre, f_pre, g_pre, o_pre = gates.split(H, dim=1)
        if self.peephole_weight is not None:
            w_ci, w_cf, w_co = self.peephole_weight  # (H,) each
            i_pre, f_pre = i_pre + w_ci * c, f_pre + w_cf * c
        c_new = torch.sigmoid(f_pre) * c + torch.sigmoid(i_pre) * torch.tanh(g_pre)  # (B, H)
        if self.peephole_weight is not None:
            o_pre = o_pre + w_co * c_new
        n = c_new
        if self.layer_norm:
            n = F.layer_norm(c_new, (H,), self.ln_cell_weight, self.ln_cell_bias, self.eps)
        h_new = torch.sigmoid(o_pre) * torch.tanh(n)
        if self.weight_hr is not None:
            h_new = h_new @ self.weight_hr.t()  # (B, R)
        h_new, c_new = self.zoneout_state((h_new, c_new), (h, c), keeps)
        return h_new, (h_new, c_new)

    def fast_inputs(self, x_proj: Tensor, noise: Tensor | None = None, keeps: list | None = None) -> dict:
        """What the fast engine (:mod:`rnnkit.scan.fast`) needs for ``x_proj (T, B, P)``."""
        core, keeps = self.split_noise(x_proj) if keeps is None else (x_proj, keeps)
        return dict(
            family="lstm", x_proj=core, weight_hh=self.weight_hh, weight_hr=self.weight_hr,
            ln_hh=self._ln_hh(), ln_cell=(self.ln_cell_weight, self.ln_cell_bias) if self.layer_norm else None,
            peephole=self.peephole_weight, eps=self.eps, drop=noise, keeps=keeps,
        )


class LayerNormGRUCell(_NormedCell):
    """GRU (torch's formulation, gate layout r, z, n) with layer normalisation of the input and
    recurrent pre-activations (``layer_norm=True``), recurrent dropout and zoneout.

    Args: as :class:`LayerNormLSTMCell`; ``forget_bias``/``chrono_init`` act on the update gate
    ``z`` (which keeps the state in torch's GRU). Shapes: x ``(B, I)``, state ``(h,)``, y = h.
    """

    gates = 3
    gate_layout = "rzn"

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, *, layer_norm: bool = True,
        eps: float = 1e-5, recurrent_dropout: float = 0.0, zoneout: float | Sequence[float] = 0.0,
        forget_bias: float | None = None, chrono_init: int | None = None, device=None, dtype=None,
    ) -> None:
        super().__init__()
        self.output_size, self.state_sizes = hidden_size, (hidden_size,)
        self._setup(input_size, hidden_size, hidden_size, bias, layer_norm, eps, recurrent_dropout, zoneout,
                    device, dtype)
        self.config = dict(
            input_size=input_size, hidden_size=hidden_size, bias=bias, layer_norm=self.layer_norm, eps=self.eps,
            recurrent_dropout=self.recurrent_dropout, zoneout=self.zoneout, forget_bias=forget_bias,
            chrono_init=chrono_init,
        )
        self.reset_parameters()
        self._init_gates(forget_bias, chrono_init)

    def project_core(self, x: Tensor) -> Tensor:
        return self._input_norm(x, self.bias_ih)  # (..., 3H)

    def project_input(self, x: Tensor) -> Tensor:
        return self._append_noise(self.project_core(x))  # (..., 3H [+ zoneout mask])

    def step(self, x_proj: Tensor, state: State, noise: Tensor | None = None) -> tuple[Tensor, State]:
        x_proj, keeps = self.split_noise(x_proj)
        (h,) = state
        H = self.hidden_size
        hh = self._recurrent(h, self.bias_hh, noise)  # (B, 3H)
        rz = torch.sigmoid(x_proj[:, : 2 * H] + hh[:, : 2 * H])
        r, z = rz[:, :H], rz[:, H:]
        n = torch.tanh(x_proj[:, 2 * H :] + r * hh[:, 2 * H :])
        h_new = torch.lerp(n, h, z)  # (1 - z) * n + z * h
        (h_new,) = self.zoneout_state((h_new,), (h,), keeps)
        return h_new, (h_new,)

    def fast_inputs(self, x_proj: Tensor, noise: Tensor | None = None, keeps: list | None = None) -> dict:
        core, keeps = self.split_noise(x_proj) if keeps is None else (x_proj, keeps)
        return dict(
            family="gru", x_proj=core, weight_hh=self.weight_hh, bias_hh=self.bias_hh, ln_hh=self.ln_hh_weight,
            eps=self.eps, drop=noise, keeps=keeps,
        )
