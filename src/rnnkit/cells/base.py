"""The cell contract: one step of a recurrence, with its parameters.

A cell splits its work in two so that a driver can run it fast:

* ``project_input(x)`` holds everything that does not depend on the state (for the classic
  cells, ``x @ W_ih^T + b``). It accepts any leading shape, so a driver computes it for all
  time steps at once as one GEMM: ``(T, B, I) -> (T, B, P)``.
* ``step(x_proj_t, state) -> (y_t, state_t)`` is the recurrent part for one time step.

States are always tuples of tensors, one per entry of ``state_sizes`` (``(h,)`` for Elman and
GRU, ``(h, c)`` for LSTM), each of shape ``(B, state_sizes[k], *rest)``: a vector cell
(``feature_dims = 1``) has no ``rest``; a convolutional cell (``feature_dims = 3``,
:class:`~rnnkit.cells.ConvLSTMCell`) has states ``(B, C, H, W)``, and sizes count channels. The
output ``y_t`` has ``output_size`` features (channels) on dim ``-feature_dims`` and is what the
next layer sees. Masking, reversal, stacking and bidirectionality belong to the driver
(:class:`rnnkit.Recurrent`), never to a cell.

Randomness is an input. A cell with per-sequence noise (recurrent dropout) returns it from
``draw_noise(batch, device, dtype)``; the driver draws it once per sequence and calls
``step(x_proj_t, state, noise)`` (cells without noise return None and are called as
``step(x_proj_t, state)``). A cell stores parameters, never per-batch state.

``gate_layout`` names the gate blocks of ``weight_ih``/``weight_hh``'s rows in order (``"ifgo"``
for the LSTM, ``"rzn"`` for the GRU, ``"h"`` for the Elman cell's one block), so initialisers
(:mod:`rnnkit.init`) find the forget gate without knowing the cell's class.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

State = tuple[Tensor, ...]


class RecurrentCell(nn.Module):
    """Base class of every rnnkit cell.

    Subclasses set ``input_size``, ``hidden_size``, ``output_size`` and ``state_sizes`` and
    implement :meth:`project_input` and :meth:`step`. They record their constructor arguments in
    ``self.config`` so that a driver can build fresh cells of the same kind for other layers
    and directions (:meth:`replicate`).
    """

    input_size: int
    hidden_size: int
    output_size: int
    state_sizes: tuple[int, ...]
    config: dict[str, Any]

    #: name of the torch fused kernel that computes exactly this cell (``"LSTM"``, ``"GRU"``,
    #: ``"RNN_TANH"``, ``"RNN_RELU"``), or ``None`` when no vendor kernel can run it.
    fused_mode: str | None = None
    #: trailing dims of one step's input, output and state entries beyond the batch (1: vectors)
    feature_dims: int = 1
    #: the gate blocks of ``weight_hh``'s rows, one letter each, in order (:mod:`rnnkit.init`);
    #: None: the cell declares none, and the gate initialisers skip it
    gate_layout: str | None = None

    # -- the contract -------------------------------------------------------------------------
    def project_input(self, x: Tensor) -> Tensor:  # (..., I) -> (..., P)
        raise NotImplementedError

    def step(self, x_proj: Tensor, state: State, noise: Tensor | None = None) -> tuple[Tensor, State]:
        raise NotImplementedError

    def draw_noise(
        self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> Tensor | None:
        """This sequence's noise for every step (None: the cell has none, or eval mode)."""
        return None

    # -- helpers shared by every cell ---------------------------------------------------------
    def initial_state(
        self, batch_size: int, *, device: torch.device | None = None, dtype: torch.dtype | None = None,
        input_shape: tuple[int, ...] | None = None,
    ) -> State:
        """Zeros of shape ``(batch_size, s)`` for each state size ``s``. ``input_shape`` is one
        step's trailing input shape, which cells with spatial states read."""
        ref = next(self.parameters(), None)
        device = device if device is not None else (ref.device if ref is not None else None)
        dtype = dtype if dtype is not None else (ref.dtype if ref is not None else None)
        return tuple(torch.zeros(batch_size, s, device=device, dtype=dtype) for s in self.state_sizes)

    def forward(self, x: Tensor, state: State | None = None, noise: Tensor | None = None) -> tuple[Tensor, State]:
        """One step: ``x`` is ``(B, I)``; returns ``(y, state)`` with ``y`` of shape ``(B, O)``.
        In training, a cell with per-sequence noise draws it for this one step unless ``noise``
        (from :meth:`draw_noise`) is given; pass the same noise to every step of a sequence."""
        if x.dim() != 2 or x.size(1) != self.input_size:
            raise ValueError(
                f"{type(self).__name__}: x must have shape (batch, {self.input_size}), "
                f"got {tuple(x.shape)}"
            )
        if state is None:
            state = self.initial_state(x.size(0), device=x.device, dtype=x.dtype)
        else:
            state = self.check_state(state, x.size(0))
        if noise is None:
            noise = self.draw_noise(x.size(0), x.device, x.dtype)
        if noise is None:
            return self.step(self.project_input(x), state)
        return self.step(self.project_input(x), state, noise)

    def check_state(self, state: State | Tensor, batch_size: int, name: str = "state") -> State:
        """Validate a per-cell state; a bare tensor is accepted for one-tensor states."""
        if isinstance(state, Tensor):
            state = (state,)
        if not isinstance(state, tuple | list) or len(state) != len(self.state_sizes):
            raise ValueError(
                f"{name} must be a tuple of {len(self.state_sizes)} tensor(s) for "
                f"{type(self).__name__}, got {type(state).__name__}"
                + (f" of length {len(state)}" if isinstance(state, tuple | list) else "")
            )
        for k, (s, size) in enumerate(zip(state, self.state_sizes, strict=True)):
            if tuple(s.shape) != (batch_size, size):
                raise ValueError(
                    f"{name}[{k}] must have shape ({batch_size}, {size}), got {tuple(s.shape)}"
                )
        return tuple(state)

    def replicate(self, input_size: int | None = None) -> RecurrentCell:
        """A freshly initialised cell of the same kind and options, on the same device/dtype.

        ``input_size`` overrides the input width (a stacked layer reads the previous layer's
        output).
        """
        config = dict(self.config)
        if input_size is not None:
            config["input_size"] = input_size
        ref = next(self.parameters(), None)
        if ref is not None:
            config.update(device=ref.device, dtype=ref.dtype)
        return type(self)(**config)

    def fused_weights(self) -> list[Tensor]:
        """The weights in the order torch's fused kernels take them (see :attr:`fused_mode`)."""
        raise NotImplementedError(f"{type(self).__name__} has no fused kernel")

    def fused_reason(self) -> str | None:
        """Why torch's fused kernels cannot compute this cell, or ``None`` if they can."""
        if self.fused_mode is None:
            return f"no vendor kernel computes {type(self).__name__}"
        # A subclass that changes the math inherits fused_mode; it must not reach the kernel.
        owner = next(c for c in type(self).__mro__ if "project_input" in c.__dict__ or "step" in c.__dict__)
        if "fused_mode" not in owner.__dict__:
            return f"{type(self).__name__} overrides the step of a cell with a vendor kernel"
        return None

    def reset_parameters(self) -> None:
        """torch.nn's initialisation: every weight ~ U(-1/sqrt(H), 1/sqrt(H))."""
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0.0
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def extra_repr(self) -> str:
        extras = ", ".join(
            f"{k}={v}" for k, v in self.config.items() if k not in ("input_size", "hidden_size", "device", "dtype")
        )
        return f"{self.input_size}, {self.hidden_size}" + (f", {extras}" if extras else "")


class GatedWeightsCell(RecurrentCell):
    """A cell with torch.nn's weight layout: ``weight_ih (G*H, I)``, ``weight_hh (G*H, R)``,
    ``bias_ih``/``bias_hh (G*H)``, where ``G`` is the number of gate blocks and ``R`` the width of
    the recurrent input (``H``, or ``proj_size`` for a projected LSTM). The names match
    ``torch.nn.RNNCell/GRUCell/LSTMCell``, so their ``state_dict``s load into rnnkit cells.
    """

    def _make_weights(
        self, gates: int, input_size: int, hidden_size: int, recurrent_size: int, bias: bool,
        device: Any = None, dtype: Any = None,
    ) -> None:
        factory = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(gates * hidden_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(gates * hidden_size, recurrent_size, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(gates * hidden_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(gates * hidden_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)

    def _project_summed_bias(self, x: Tensor) -> Tensor:
        """``x @ W_ih^T + b_ih + b_hh`` (both biases folded in: valid when the recurrent
        pre-activation enters the gates as a plain sum, as in Elman and LSTM)."""
        bias = None if self.bias_ih is None else self.bias_ih + self.bias_hh
        return torch.nn.functional.linear(x, self.weight_ih, bias)  # (..., G*H)

    def fused_weights(self) -> list[Tensor]:
        if self.fused_mode is None:
            return super().fused_weights()
        weights = [self.weight_ih, self.weight_hh]
        if self.bias_ih is not None:
            weights += [self.bias_ih, self.bias_hh]
        return weights
