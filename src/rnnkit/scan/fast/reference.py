"""The fast engine's recurrences in plain differentiable torch ops: its traceable form.

Each function has the contract of its fast counterpart (:func:`~rnnkit.scan.fast.lstm_sequence`,
:func:`~rnnkit.scan.fast.gru_sequence`, :func:`~rnnkit.scan.fast.simple_sequence`): time-major
``xp (T, B, G)``, keep factors ``(T, B, S|1)`` applied from step ``keep_from`` on, the
recurrent-dropout mask ``drop (B, R)`` on what the recurrent matmul reads. They run where the
hand-written Functions cannot: under torch.func transforms and TorchScript tracing
(:mod:`rnnkit.cells._trace`; compile and export take the custom ops instead), and in the
Functions' backward when a graph of it is asked for (``create_graph=True``) or it is vmapped: the
Functions then differentiate these (:func:`rnnkit.cells._autograd.differentiable_grads`). Tests
assert both forms agree in values and gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["gru_reference", "lstm_reference", "simple_reference"]


def _keep(candidate: Tensor, previous: Tensor, keep: Tensor | None, t: int, keep_from: int) -> Tensor:
    if keep is None or t < keep_from:
        return candidate
    return torch.lerp(candidate, previous, keep[t])


def lstm_reference(
    xp: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, w_hr: Tensor | None, ln_hw: Tensor | None,
    ln_hb: Tensor | None, ln_cw: Tensor | None, ln_cb: Tensor | None, peep: Tensor | None, drop: Tensor | None,
    keep_h: Tensor | None, keep_c: Tensor | None, eps: float, keep_from: int,
) -> tuple[Tensor, Tensor]:
    """Every ``h_t (T, B, R)`` and the last ``c (B, H)``; gate order i, f, g, o."""
    H = c0.size(-1)
    h, c, hs = h0, c0, []
    for t, x_t in enumerate(xp.unbind(0)):
        a = (h if drop is None else h * drop) @ w_hh.t()  # (B, 4H)
        if ln_hw is not None:
            a = F.layer_norm(a, (4 * H,), ln_hw, ln_hb, eps)
        i, f, g, o = (x_t + a).split(H, dim=-1)
        if peep is not None:
            i, f = i + peep[0] * c, f + peep[1] * c
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)  # c~_t
        if peep is not None:
            o = o + peep[2] * c_new
        n = c_new if ln_cw is None else F.layer_norm(c_new, (H,), ln_cw, ln_cb, eps)
        m = torch.sigmoid(o) * torch.tanh(n)
        h_new = m if w_hr is None else m @ w_hr.t()  # (B, R)
        h, c = _keep(h_new, h, keep_h, t, keep_from), _keep(c_new, c, keep_c, t, keep_from)
        hs.append(h)
    return torch.stack(hs), c


def gru_reference(
    xp: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor | None, ln_hh: Tensor | None, drop: Tensor | None,
    keep: Tensor | None, eps: float, keep_from: int,
) -> Tensor:
    """Every ``h_t (T, B, H)``; torch's GRU (gates r, z, n; ``b_hh`` inside ``r * (...)``)."""
    H = h0.size(-1)
    h, hs = h0, []
    for t, x_t in enumerate(xp.unbind(0)):
        hh = (h if drop is None else h * drop) @ w_hh.t()  # (B, 3H)
        if ln_hh is not None:
            hh = F.layer_norm(hh, (3 * H,), ln_hh, b_hh, eps)
        elif b_hh is not None:
            hh = hh + b_hh
        rz = torch.sigmoid(x_t[:, : 2 * H] + hh[:, : 2 * H])
        r, z = rz[:, :H], rz[:, H:]
        n = torch.tanh(x_t[:, 2 * H :] + r * hh[:, 2 * H :])
        h = _keep(torch.lerp(n, h, z), h, keep, t, keep_from)
        hs.append(h)
    return torch.stack(hs)


def simple_reference(
    xp: Tensor, h0: Tensor, w_hh: Tensor, drop: Tensor | None, keep: Tensor | None, activation: str, keep_from: int
) -> Tensor:
    """Every ``h_t (T, B, H)``: Elman (``w_hh (H, H)``) or IndRNN (``w_hh (H,)``)."""
    act = torch.tanh if activation == "tanh" else torch.relu
    h, hs = h0, []
    for t, x_t in enumerate(xp.unbind(0)):
        hin = h if drop is None else h * drop
        pre = x_t + (hin @ w_hh.t() if w_hh.dim() == 2 else hin * w_hh)
        h = _keep(act(pre), h, keep, t, keep_from)
        hs.append(h)
    return torch.stack(hs)
