"""The Triton path's Functions as ``torch.library`` custom ops, for ``torch.compile`` and ``torch.export``.

As :mod:`rnnkit.scan.fast.ops` does for the fast engine: under Dynamo or export each layer and
direction is one ``rnnkit::triton_lstm_forward`` / ``rnnkit::triton_gru_forward`` node (fake
kernels give the shapes; autograd is registered between the forward and backward ops), and the
ops run the same kernels as eager calls. Double backward differentiates the plain form.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.scan.fast.ops import _Ctx, _empty, _fake_grads, _grads_out, _or_none, _register_autograd
from rnnkit.scan.fast.reference import gru_reference, lstm_reference
from rnnkit.scan.triton.scan import _GRU, _LSTM

__all__ = ["triton_gru_op", "triton_lstm_op"]

Opt = Tensor | None


def _lstm_plain(xp, h0, c0, w_hh, ln_hw, ln_hb, ln_cw, ln_cb, peep, drop, keep_h, keep_c, eps, keep_from):
    """:func:`lstm_reference` without a projection, in the Triton Function's argument order."""
    return lstm_reference(xp, h0, c0, w_hh, None, ln_hw, ln_hb, ln_cw, ln_cb, peep, drop, keep_h, keep_c, eps,
                          keep_from)


@torch.library.custom_op("rnnkit::triton_lstm_forward", mutates_args=())
def _lstm_forward(
    xp: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, ln_hw: Opt, ln_hb: Opt, ln_cw: Opt, ln_cb: Opt, peep: Opt,
    drop: Opt, keep_h: Opt, keep_c: Opt, eps: float, keep_from: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    ctx = _Ctx()
    Hs, c_last = _LSTM.forward(ctx, xp, h0, c0, w_hh, ln_hw, ln_hb, ln_cw, ln_cb, peep, drop, keep_h, keep_c, eps,
                               keep_from)
    A, G, C, TC, Cs, STG, STC = ctx.buffers
    return Hs, c_last, A, G, C, TC, _empty(xp) if Cs is C else Cs, STG, STC


@_lstm_forward.register_fake
def _(xp, h0, c0, w_hh, ln_hw, ln_hb, ln_cw, ln_cb, peep, drop, keep_h, keep_c, eps, keep_from):
    T, B, G4 = xp.shape
    H = G4 // 4
    new = xp.new_empty
    zoned = keep_h is not None or keep_c is not None
    return (new(T, B, H), new(B, H), new(T, B, G4), new(T, B, G4), new(T, B, H), new(T, B, H),
            new(T, B, H) if zoned else new(0), new(T, B, 2), new(T, B, 2))


@torch.library.custom_op("rnnkit::triton_lstm_backward", mutates_args=())
def _lstm_backward(
    dHs: Tensor, dcT: Tensor, xp: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, ln_hw: Opt, ln_hb: Opt, ln_cw: Opt,
    ln_cb: Opt, peep: Opt, drop: Opt, keep_h: Opt, keep_c: Opt, Hs: Tensor, A: Tensor, G: Tensor, C: Tensor,
    TC: Tensor, Cs: Tensor, STG: Tensor, STC: Tensor, eps: float, keep_from: int, needs: list[bool],
) -> list[Tensor]:
    inputs = (xp, h0, c0, w_hh, ln_hw, ln_hb, ln_cw, ln_cb, peep, drop, keep_h, keep_c)
    Cs = C if _or_none(Cs) is None else Cs
    ctx = _Ctx(tuple(needs) + (False, False), (*inputs[1:], Hs, xp), keep_from=keep_from, eps=eps,
               scalars=(eps, keep_from), buffers=(A, G, C, TC, Cs, STG, STC))
    return _grads_out(_LSTM.backward(ctx, dHs.contiguous(), dcT.contiguous()), inputs, needs)


@_lstm_backward.register_fake
def _(dHs, dcT, xp, h0, c0, w_hh, ln_hw, ln_hb, ln_cw, ln_cb, peep, drop, keep_h, keep_c, *rest):
    return _fake_grads((xp, h0, c0, w_hh, ln_hw, ln_hb, ln_cw, ln_cb, peep, drop, keep_h, keep_c), rest[-1])


_register_autograd(_lstm_forward, _lstm_backward, _lstm_plain, n_in=12, n_out=2)


def triton_lstm_op(*args) -> tuple[Tensor, Tensor]:
    """The Triton ``_LSTM`` Function's arguments -> ``(Hs, c_last)`` through the op."""
    out = _lstm_forward(*args)
    return out[0], out[1]


@torch.library.custom_op("rnnkit::triton_gru_forward", mutates_args=())
def _gru_forward(
    xp: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Opt, ln_hw: Opt, drop: Opt, keep: Opt, eps: float, keep_from: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    ctx = _Ctx()
    Hs = _GRU.forward(ctx, xp, h0, w_hh, b_hh, ln_hw, drop, keep, eps, keep_from)
    A, HH, RZ, N, ST = ctx.buffers
    return Hs, A, _empty(xp) if HH is A else HH, RZ, N, ST


@_gru_forward.register_fake
def _(xp, h0, w_hh, b_hh, ln_hw, drop, keep, eps, keep_from):
    T, B, G3 = xp.shape
    H = G3 // 3
    new = xp.new_empty
    return (new(T, B, H), new(T, B, G3), new(T, B, G3) if ln_hw is not None else new(0), new(T, B, 2 * H),
            new(T, B, H), new(T, B, 2))


@torch.library.custom_op("rnnkit::triton_gru_backward", mutates_args=())
def _gru_backward(
    dHs: Tensor, xp: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Opt, ln_hw: Opt, drop: Opt, keep: Opt, Hs: Tensor,
    A: Tensor, HH: Tensor, RZ: Tensor, N: Tensor, ST: Tensor, eps: float, keep_from: int, needs: list[bool],
) -> list[Tensor]:
    inputs = (xp, h0, w_hh, b_hh, ln_hw, drop, keep)
    HH = A if _or_none(HH) is None else HH
    ctx = _Ctx(tuple(needs) + (False, False), (*inputs[1:], Hs, xp), keep_from=keep_from, eps=eps,
               scalars=(eps, keep_from), buffers=(A, HH, RZ, N, ST))
    return _grads_out(_GRU.backward(ctx, dHs.contiguous()), inputs, needs)


@_gru_backward.register_fake
def _(dHs, xp, h0, w_hh, b_hh, ln_hw, drop, keep, *rest):
    return _fake_grads((xp, h0, w_hh, b_hh, ln_hw, drop, keep), rest[-1])


_register_autograd(_gru_forward, _gru_backward, gru_reference, n_in=7, n_out=1)


def triton_gru_op(*args) -> Tensor:
    """The Triton ``_GRU`` Function's arguments -> ``Hs`` through the op."""
    return _gru_forward(*args)[0]
