"""The peephole LSTM: the gates also read the cell state.

Gers & Schmidhuber, "Recurrent nets that time and count", IJCNN 2000; in the form of Graves,
"Generating sequences with recurrent neural networks", 2013, eqs. 7-11::

    i_t  = sigmoid(x_t W_ii^T + h_{t-1} W_hi^T + w_ci * c_{t-1} + b_i)
    f_t  = sigmoid(x_t W_if^T + h_{t-1} W_hf^T + w_cf * c_{t-1} + b_f)
    g_t  = tanh(x_t W_ig^T + h_{t-1} W_hg^T + b_g)
    c_t  = f_t * c_{t-1} + i_t * g_t
    o_t  = sigmoid(x_t W_io^T + h_{t-1} W_ho^T + w_co * c_t + b_o)      (the new cell state)
    h_t  = o_t * tanh(c_t)

``w_ci, w_cf, w_co`` are the rows of ``peephole_weight (3, H)``: diagonal peepholes, one weight
per unit. Everything else (weight names, i f g o layout, projection, layer normalisation,
recurrent dropout, zoneout, forget-gate initialisers) is :class:`LayerNormLSTMCell`'s, which
holds the step; with ``peephole_weight = 0`` the cell equals ``torch.nn.LSTMCell``.
"""

from __future__ import annotations

from collections.abc import Sequence

from rnnkit.cells.layernorm import LayerNormLSTMCell

__all__ = ["PeepholeLSTMCell"]


class PeepholeLSTMCell(LayerNormLSTMCell):
    """LSTM with diagonal peepholes (``layer_norm=False`` by default). Options and shapes as
    :class:`LayerNormLSTMCell`: x ``(B, I)``, state ``(h (B, R), c (B, H))``, y = h."""

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, *, layer_norm: bool = False,
        proj_size: int = 0, eps: float = 1e-5, recurrent_dropout: float = 0.0,
        zoneout: float | Sequence[float] = 0.0, forget_bias: float | None = None, chrono_init: int | None = None,
        device=None, dtype=None,
    ) -> None:
        super().__init__(
            input_size, hidden_size, bias, layer_norm=layer_norm, peephole=True, proj_size=proj_size, eps=eps,
            recurrent_dropout=recurrent_dropout, zoneout=zoneout, forget_bias=forget_bias, chrono_init=chrono_init,
            device=device, dtype=dtype,
        )
        del self.config["peephole"]
