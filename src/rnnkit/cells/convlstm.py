"""The convolutional LSTM: an LSTM whose states are feature maps and whose products are convolutions.

Shi, Chen, Wang, Yeung, Wong & Woo, "Convolutional LSTM Network: A Machine Learning Approach for
Precipitation Nowcasting", NeurIPS 2015, eqs. (3). In this module's names (``*`` is a 2-D
convolution with "same" padding ``kernel_size // 2``, ``⊙`` the elementwise product, ``W_i*``
the rows of ``weight_ih``/``weight_hh`` in the order i, f, g, o, ``b = bias_ih + bias_hh``)::

    i  = sigmoid(W_ii * x + W_hi * h + b_i  [+ w_ci ⊙ c ])
    f  = sigmoid(W_if * x + W_hf * h + b_f  [+ w_cf ⊙ c ])
    g  = tanh   (W_ig * x + W_hg * h + b_g)
    c' = f ⊙ c + i ⊙ g
    o  = sigmoid(W_io * x + W_ho * h + b_o  [+ w_co ⊙ c'])      (the new cell state, as in the paper)
    h' = o ⊙ tanh(c')

Deviations from the paper:

* The Hadamard peephole terms ``W_c ⊙ c`` (in brackets above) are off by default, as in
  torch.nn's LSTM; ``peephole=True`` adds them. The paper's peephole weights are full maps
  ``(C_h, H, W)``, which would tie the cell to one spatial size; here they are one weight per
  channel, ``peephole_weight (3, C_h, 1, 1)`` (rows i, f, o), broadcast over the pixels.
* Two biases ``bias_ih``/``bias_hh`` as in torch.nn's LSTM (the paper has one ``b`` per gate):
  only their sum enters the gates, and it is folded into :meth:`ConvLSTMCell.project_input`.
  They are kept separate so that :mod:`rnnkit.init`'s gate-bias initialisers apply unchanged.
* Initialisation: every parameter ~ U(-1/sqrt(C_h k k), 1/sqrt(C_h k k)), torch.nn's RNN rule
  with the recurrent kernel's fan-in ``C_h k k`` in place of ``H``.

Shapes: one step's input is ``(B, C_in, H, W)``, its output and both states ``(B, C_h, H, W)``
(``feature_dims = 3``). The cell's sizes (``input_size``, ``hidden_size``, ``output_size``,
``state_sizes``) are channel counts; the spatial size is any, fixed by the input.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.cells.base import RecurrentCell, State

__all__ = ["ConvLSTMCell"]


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class ConvLSTMCell(RecurrentCell):
    """ConvLSTM cell (Shi et al. 2015; equations in :mod:`rnnkit.cells.convlstm`).

    Args:
        input_size: input channels ``C_in`` (alias of the paper's input maps' depth).
        hidden_size: hidden channels ``C_h`` of h and c.
        kernel_size: odd side ``k`` of the square kernels of both convolutions ("same" padding
            ``k // 2``, stride 1, so the spatial size is kept).
        bias: learn ``bias_ih``/``bias_hh (4 C_h,)``.
        peephole: add per-channel peephole weights ``peephole_weight (3, C_h, 1, 1)`` (i, f, o).

    Parameters: ``weight_ih (4 C_h, C_in, k, k)``, ``weight_hh (4 C_h, C_h, k, k)``, rows in the
    gate order i, f, g, o (torch's). Shapes: x ``(B, C_in, H, W)``; state ``(h, c)`` each
    ``(B, C_h, H, W)``; output y = h.
    """

    feature_dims = 3  # one step's input / output / state is (B, C, H, W)
    gate_layout = "ifgo"
    fused_mode = None

    def __init__(
        self, input_size: int, hidden_size: int, kernel_size: int = 3, bias: bool = True, peephole: bool = False,
        device=None, dtype=None,
    ) -> None:
        super().__init__()
        input_size = _positive_int(input_size, "input_size (input channels)")
        hidden_size = _positive_int(hidden_size, "hidden_size (hidden channels)")
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size must be a positive odd int (for 'same' padding kernel_size // 2), got {kernel_size!r}"
            )
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, hidden_size
        self.state_sizes = (hidden_size, hidden_size)
        self.kernel_size, self.padding = kernel_size, kernel_size // 2
        self.peephole = bool(peephole)
        self.config = dict(
            input_size=input_size, hidden_size=hidden_size, kernel_size=kernel_size, bias=bool(bias),
            peephole=self.peephole,
        )
        factory = {"device": device, "dtype": dtype}
        k, G = kernel_size, 4 * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G, input_size, k, k, **factory))
        self.weight_hh = nn.Parameter(torch.empty(G, hidden_size, k, k, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(G, **factory))
            self.bias_hh = nn.Parameter(torch.empty(G, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.register_parameter(
            "peephole_weight",
            nn.Parameter(torch.empty(3, hidden_size, 1, 1, **factory)) if self.peephole else None,
        )
        self.reset_parameters()

    @property
    def input_channels(self) -> int:
        return self.input_size

    @property
    def hidden_channels(self) -> int:
        return self.hidden_size

    def reset_parameters(self) -> None:
        """Every parameter ~ U(-1/sqrt(C_h k k), 1/sqrt(C_h k k)) (torch.nn's RNN rule with the
        recurrent kernel's fan-in)."""
        bound = 1.0 / math.sqrt(self.hidden_size * self.kernel_size**2)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    # -- the contract -------------------------------------------------------------------------
    def project_input(self, x: Tensor) -> Tensor:
        """``W_x * x + b_ih + b_hh`` for all steps at once: ``(..., C_in, H, W) -> (..., 4 C_h, H, W)``,
        one convolution over the flattened leading dimensions."""
        if x.dim() < 3 or x.size(-3) != self.input_size:
            raise ValueError(
                f"{type(self).__name__}.project_input: x must have shape (..., {self.input_size}, H, W), "
                f"got {tuple(x.shape)}"
            )
        lead = x.shape[:-3]
        flat = x.flatten(0, -4) if lead else x.unsqueeze(0)  # (N, C_in, H, W)
        bias = None if self.bias_ih is None else self.bias_ih + self.bias_hh
        out = F.conv2d(flat, self.weight_ih, bias, padding=self.padding)  # (N, 4 C_h, H, W)
        return out.reshape(*lead, *out.shape[1:])

    def step(self, x_proj: Tensor, state: State) -> tuple[Tensor, State]:
        h, c = state  # (B, C_h, H, W) each
        gates = x_proj + F.conv2d(h, self.weight_hh, None, padding=self.padding)  # (B, 4 C_h, H, W)
        i_pre, f_pre, g_pre, o_pre = gates.chunk(4, dim=1)
        if self.peephole_weight is not None:
            w_ci, w_cf, w_co = self.peephole_weight  # (C_h, 1, 1) each
            i_pre, f_pre = i_pre + w_ci * c, f_pre + w_cf * c
        c_new = torch.addcmul(torch.sigmoid(f_pre) * c, torch.sigmoid(i_pre), torch.tanh(g_pre))
        if self.peephole_weight is not None:
            o_pre = o_pre + w_co * c_new
        h_new = torch.sigmoid(o_pre) * torch.tanh(c_new)
        return h_new, (h_new, c_new)

    # -- helpers ------------------------------------------------------------------------------
    def initial_state(
        self, batch_size: int, *, device: torch.device | None = None, dtype: torch.dtype | None = None,
        input_shape: tuple[int, ...] | torch.Size | None = None,
    ) -> State:
        """Zeros ``(batch_size, C_h, H, W)`` for h and c, where ``(H, W) = input_shape[-2:]``;
        ``input_shape`` is one step's trailing input shape ``(C_in, H, W)``. Only its spatial
        size is read (a driver may pass layer 0's input shape to every layer's cell)."""
        if input_shape is None:
            raise ValueError(
                f"{type(self).__name__}.initial_state needs input_shape, one step's input shape "
                f"({self.input_size}, H, W), for the spatial size of the state"
            )
        input_shape = tuple(input_shape)
        if len(input_shape) < 2:
            raise ValueError(
                f"{type(self).__name__}.initial_state: input_shape must end in the spatial size (H, W), "
                f"as in ({self.input_size}, H, W); got {input_shape}"
            )
        ref = next(self.parameters(), None)
        device = device if device is not None else (ref.device if ref is not None else None)
        dtype = dtype if dtype is not None else (ref.dtype if ref is not None else None)
        shape = (batch_size, self.hidden_size, *input_shape[-2:])
        return tuple(torch.zeros(shape, device=device, dtype=dtype) for _ in self.state_sizes)

    def check_state(
        self, state: State | Tensor, batch_size: int, name: str = "state",
        spatial_size: tuple[int, int] | None = None,
    ) -> State:
        """``state`` must be a tuple ``(h, c)`` of ``(batch_size, C_h, H, W)`` tensors with the
        same ``(H, W)`` (equal to ``spatial_size`` when given)."""
        if not isinstance(state, tuple | list) or len(state) != len(self.state_sizes):
            raise ValueError(
                f"{name} must be a tuple of {len(self.state_sizes)} tensors (h, c) for "
                f"{type(self).__name__}, got {type(state).__name__}"
                + (f" of length {len(state)}" if isinstance(state, tuple | list) else "")
            )
        spatial = tuple(spatial_size) if spatial_size is not None else None
        for k, (s, size) in enumerate(zip(state, self.state_sizes, strict=True)):
            if not isinstance(s, Tensor):
                raise ValueError(f"{name}[{k}] must be a Tensor, got {type(s).__name__}")
            want_spatial = spatial if spatial is not None else tuple(s.shape[2:])
            expected = (batch_size, size, *want_spatial)
            if s.dim() != 4 or tuple(s.shape) != expected:
                shown = "H, W" if spatial is None else ", ".join(map(str, spatial))
                raise ValueError(f"{name}[{k}] must have shape ({batch_size}, {size}, {shown}), got {tuple(s.shape)}")
            if spatial is None:
                spatial = want_spatial  # h and c must agree
        return tuple(state)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One step: ``x`` is ``(B, C_in, H, W)``; returns ``(h', (h', c'))``, each ``(B, C_h, H, W)``."""
        if not isinstance(x, Tensor) or x.dim() != 4 or x.size(1) != self.input_size:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{type(self).__name__}: x must have shape (batch, {self.input_size}, H, W), got {got}")
        if state is None:
            state = self.initial_state(x.size(0), device=x.device, dtype=x.dtype, input_shape=x.shape[1:])
        else:
            state = self.check_state(state, x.size(0), spatial_size=tuple(x.shape[-2:]))
        return self.step(self.project_input(x), state)
