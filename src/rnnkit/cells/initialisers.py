"""Initialisers that fight exploding and vanishing gradients in recurrent layers.

Each function takes a cell, an :class:`rnnkit.Recurrent`, a torch.nn (or rnnkit drop-in)
``RNN``/``GRU``/``LSTM``, or any module containing them, changes the recurrent parameters in
place, and returns the module. The gate layouts are torch's: LSTM rows ``i, f, g, o``; GRU rows
``r, z, n``; Elman one block.

Why they help (Pascanu et al. 2013): backpropagation through time multiplies the gradient by the
step Jacobian ``J_t = d h_t / d h_{t-1}`` once per step, so ``||dL/dh_t||`` shrinks or grows
roughly like ``||J||^(T - t)``. Keeping ``J`` close to norm one at the start of training lets
gradients reach far back.

=============================  ================================================================
:func:`orthogonal_recurrent_`  every H x R block of ``weight_hh`` orthogonal: singular values 1
                               (Saxe et al., ICLR 2014)
:func:`identity_recurrent_`    IRNN: ``weight_hh = scale * I``, biases 0, for ReLU Elman cells
                               (Le, Jaitly & Hinton 2015)
:func:`forget_gate_bias_`      the LSTM forget gate (GRU update gate) starts open:
                               ``b_f = 1`` (Gers, Schmidhuber & Cummins 2000; Jozefowicz 2015)
:func:`chrono_init_`           ``b_f ~ log U(1, T_max - 1)``, ``b_i = -b_f``: memories with time
                               scales up to ``T_max`` (Tallec & Ollivier, ICLR 2018)
=============================  ================================================================

Symbols: H hidden size, R recurrent input width (H, or ``proj_size`` for a projected LSTM),
G gate blocks (1 Elman, 3 GRU, 4 LSTM), ``b = b_ih + b_hh`` the effective gate bias.

A cell of another family can opt in by defining ``gate_layout``, a string with one letter per
gate block of ``weight_hh`` (``"ifgo"`` for LSTM; ``"rzn"`` for GRU; ``"h"`` for Elman): ``f``
marks a forget gate (``c_t = f_t * c_{t-1} + ...``), ``z`` a GRU-style keep gate
(``h_t = z_t * h_{t-1} + (1 - z_t) * n_t``), ``i`` an input gate.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "INITIALISERS",
    "chrono_init_",
    "forget_gate_bias_",
    "gate_layouts",
    "identity_recurrent_",
    "initialise_",
    "orthogonal_recurrent_",
]

# torch.nn fused modes -> gate layout, one letter per block of weight_hh's rows
_MODE_LAYOUT = {"LSTM": "ifgo", "GRU": "rzn", "RNN_TANH": "h", "RNN_RELU": "h"}


@dataclass
class _Block:
    """One recurrence's parameters: ``weight_hh (G*H, R)``, optional biases ``(G*H,)``."""

    name: str
    layout: str
    weight_hh: Tensor
    bias_ih: Tensor | None
    bias_hh: Tensor | None
    relu: bool

    @property
    def hidden(self) -> int:
        return self.weight_hh.size(0) // len(self.layout)

    def rows(self, gate: str) -> slice:
        k, H = self.layout.index(gate), self.hidden
        return slice(k * H, (k + 1) * H)


def _cell_layout(module: nn.Module) -> str | None:
    """The cell's declared ``gate_layout`` (every rnnkit cell declares one; None if absent)."""
    layout = getattr(module, "gate_layout", None)
    return layout or None


def _blocks(module: nn.Module) -> Iterator[_Block]:
    """Every recurrence inside ``module``: rnnkit cells and torch.nn RNN/GRU/LSTM layers."""
    for name, m in module.named_modules():
        if isinstance(m, nn.RNNBase):
            layout = _MODE_LAYOUT[m.mode]
            suffixes = [f"_l{k}" + r for k in range(m.num_layers) for r in ([""] + ["_reverse"] * m.bidirectional)]
            for s in suffixes:
                yield _Block(
                    f"{name}.weight_hh{s}".lstrip("."), layout, getattr(m, f"weight_hh{s}"),
                    getattr(m, f"bias_ih{s}", None), getattr(m, f"bias_hh{s}", None), m.mode == "RNN_RELU",
                )
        elif isinstance(getattr(m, "weight_hh", None), Tensor):
            layout = _cell_layout(m)
            if layout is None:
                continue
            yield _Block(
                name or type(m).__name__, layout, m.weight_hh, getattr(m, "bias_ih", None),
                getattr(m, "bias_hh", None), getattr(m, "nonlinearity", "tanh") == "relu",
            )


def gate_layouts(module: nn.Module) -> list[str]:
    """The gate layout of every recurrence the initialisers can see in ``module`` (``"ifgo"``...)."""
    return [b.layout for b in _blocks(module)]


def _all_blocks(module: nn.Module, what: str) -> list[_Block]:
    blocks = list(_blocks(module))
    if not blocks:
        raise ValueError(
            f"{what}: found no recurrent weights in {type(module).__name__}; expected rnnkit cells, "
            "rnnkit.Recurrent, or torch.nn RNN/GRU/LSTM (a custom cell can declare gate_layout)"
        )
    return blocks


@torch.no_grad()
def orthogonal_recurrent_(module: nn.Module, gain: float = 1.0) -> nn.Module:
    """Each ``H x R`` gate block ``W_hh[k]`` of every recurrence becomes ``gain * Q`` with ``Q``
    (semi-)orthogonal, so all its singular values equal ``gain`` (Saxe, McClelland & Ganguli,
    "Exact solutions to the nonlinear dynamics of learning in deep linear networks", 2014).
    Input weights and biases are left alone."""
    for b in _all_blocks(module, "orthogonal_recurrent_"):
        for gate in b.layout:
            nn.init.orthogonal_(b.weight_hh[b.rows(gate)], gain=gain)  # (H, R) block
    return module


@torch.no_grad()
def identity_recurrent_(module: nn.Module, scale: float = 1.0, *, input_std: float | None = 0.001) -> nn.Module:
    """IRNN (Le, Jaitly & Hinton, "A simple way to initialize recurrent networks of rectified
    linear units", 2015): ``W_hh = scale * I`` and zero biases, so at the start a ReLU Elman
    cell copies its state forward (``J = scale * I`` wherever ``h > 0``). ``input_std``: the
    input weights ``W_ih ~ N(0, input_std^2)`` as in the paper (``None`` leaves them).

    Only for one-block (Elman) recurrences; a tanh cell is accepted too (near-identity
    Jacobian at ``h ~ 0``) but the paper's results are for ReLU."""
    for b in _all_blocks(module, "identity_recurrent_"):
        if len(b.layout) != 1:
            raise ValueError(
                f"identity_recurrent_ is for Elman (one-block) recurrences; {b.name} has gates {b.layout!r}"
            )
        if b.weight_hh.size(0) != b.weight_hh.size(1):
            raise ValueError(f"identity_recurrent_: {b.name} is not square: {tuple(b.weight_hh.shape)}")
        b.weight_hh.copy_(torch.eye(b.hidden, dtype=b.weight_hh.dtype, device=b.weight_hh.device) * scale)
        for bias in (b.bias_ih, b.bias_hh):
            if bias is not None:
                bias.zero_()
    if input_std is not None:
        for m in module.modules():
            w = getattr(m, "weight_ih", None)
            if isinstance(w, Tensor) and _cell_layout(m) == "h":
                nn.init.normal_(w, 0.0, input_std)
            elif isinstance(m, nn.RNNBase) and m.mode.startswith("RNN"):
                for name in m._flat_weights_names:
                    if name.startswith("weight_ih"):
                        nn.init.normal_(getattr(m, name), 0.0, input_std)
    return module


def _keep_gate(b: _Block, what: str) -> str:
    for gate in ("f", "z"):
        if gate in b.layout:
            return gate
    raise ValueError(f"{what}: {b.name} has no forget gate (gate layout {b.layout!r}); it applies to LSTM/GRU cells")


def _set_gate_bias(b: _Block, gate: str, value: Tensor | float) -> None:
    """Set the effective bias ``b_ih + b_hh`` of one gate block: ``b_ih = value``, ``b_hh = 0``."""
    if b.bias_ih is None or b.bias_hh is None:
        raise ValueError(f"{b.name} has no biases (bias=False); gate-bias initialisers need them")
    rows = b.rows(gate)
    b.bias_ih[rows] = value
    b.bias_hh[rows] = 0.0


@torch.no_grad()
def forget_gate_bias_(module: nn.Module, value: float = 1.0) -> nn.Module:
    """Start the forget gate open: effective bias ``b_f = value`` (Gers, Schmidhuber & Cummins,
    "Learning to forget", 2000; Jozefowicz et al. 2015 recommend 1). For a GRU the same role is
    played by the update gate ``z`` (in torch's GRU ``h_t = z * h_{t-1} + (1 - z) * n``), so
    ``b_z = value``. Elman recurrences have no such gate: ValueError."""
    for b in _all_blocks(module, "forget_gate_bias_"):
        _set_gate_bias(b, _keep_gate(b, "forget_gate_bias_"), value)
    return module


@torch.no_grad()
def chrono_init_(module: nn.Module, max_len: int, *, generator: torch.Generator | None = None) -> nn.Module:
    """Chrono initialisation (Tallec & Ollivier, "Can recurrent neural networks warp time?",
    ICLR 2018): ``b_f ~ log(U(1, max_len - 1))`` and ``b_i = -b_f``, per unit. A leaky unit
    ``c_t = f c_{t-1} + ...`` with ``f = sigmoid(b_f)`` forgets over ``1 + e^{b_f}`` steps, so
    the units' memories span time scales ``2 .. max_len`` instead of all ~2 steps at ``b = 0``.

    GRU: ``b_z ~ log(U(1, max_len - 1))`` (``z`` keeps the state; ``1 - z`` already acts as the
    input gate). ``max_len``: the longest dependency expected, e.g. the sequence length."""
    if max_len < 3:
        raise ValueError(f"chrono_init_: max_len must be >= 3 (the range is U(1, max_len - 1)), got {max_len}")
    for b in _all_blocks(module, "chrono_init_"):
        gate = _keep_gate(b, "chrono_init_")
        u = torch.rand(b.hidden, generator=generator, dtype=torch.float64)  # (H,)
        bias = torch.log(1.0 + u * (max_len - 2)).to(b.weight_hh.dtype)  # log U(1, max_len - 1)
        _set_gate_bias(b, gate, bias)
        if gate == "f" and "i" in b.layout:
            _set_gate_bias(b, "i", -bias)
    return module


#: initialisers by name, for configs and the CLI. Each takes ``(module, **options)``.
INITIALISERS = {
    "orthogonal": orthogonal_recurrent_,
    "identity": identity_recurrent_,
    "forget_bias": forget_gate_bias_,
    "chrono": chrono_init_,
}


def initialise_(module: nn.Module, scheme: str, *, max_len: int | None = None) -> nn.Module:
    """Apply a named scheme: ``"default"`` (leave torch's U(-1/sqrt(H), 1/sqrt(H))), one of
    :data:`INITIALISERS`, or several joined by ``+`` (``"orthogonal+chrono"``). ``chrono``
    needs ``max_len``. A gate initialiser on a cell without gates is skipped silently here
    (so one scheme string can serve every cell in a sweep); call it directly to get the error."""
    if scheme in ("default", ""):
        return module
    for part in scheme.split("+"):
        if part not in INITIALISERS:
            raise ValueError(f"unknown initialiser {part!r}; known: default, {', '.join(INITIALISERS)}")
        if part in ("forget_bias", "chrono") and not any(set(b.layout) & {"f", "z"} for b in _blocks(module)):
            continue
        if part == "identity" and not all(len(b.layout) == 1 for b in _blocks(module)):
            continue
        if part == "chrono":
            if max_len is None:
                raise ValueError("the chrono initialiser needs max_len (the longest dependency, e.g. T)")
            chrono_init_(module, max_len)
        else:
            INITIALISERS[part](module)
    return module

