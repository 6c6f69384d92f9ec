"""The fast engine's kernels as ``torch.library`` custom ops, for ``torch.compile`` and ``torch.export``.

Eager calls run the hand-written ``autograd.Function`` s directly (:mod:`.lstm`, :mod:`.gru`,
:mod:`.simple`). Under Dynamo or ``torch.export`` they would be traced step by step (a graph of
``T`` unrolled steps, and ``out=`` ops that the tracers refuse), so there each layer becomes one
opaque op instead: ``rnnkit::<family>_forward`` and ``rnnkit::<family>_backward``, each with a fake
(shape) kernel, and autograd registered between them. The compiled graph then holds one node per
layer and direction, runs the same hand-written kernels, and compiles in about the same time
whatever ``T`` is. The forward op returns, after the outputs, the buffers its backward reads
(empty tensors where a buffer would only alias another one); they are saved for backward and
carry no gradient.

Double backward (``create_graph=True``) differentiates the engine's plain form
(:mod:`.reference`) on the saved inputs, as the Functions do. torch.func transforms (vmap, grad)
never reach these ops: the engine takes its plain form under them (:mod:`rnnkit.cells._trace`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.cells._autograd import differentiable_grads, plain_backward_needed
from rnnkit.scan.fast.gru import _GRU
from rnnkit.scan.fast.lstm import _LSTM
from rnnkit.scan.fast.reference import gru_reference, lstm_reference, simple_reference
from rnnkit.scan.fast.simple import _Simple

__all__ = ["gru_op", "lstm_op", "simple_op"]

Opt = Tensor | None


class _Ctx:
    """Stands in for autograd's ``ctx`` when a Function's forward or backward body runs inside an op."""

    def __init__(self, needs: tuple[bool, ...] = (), saved: tuple = (), **attrs) -> None:
        self.needs_input_grad, self.saved_tensors = needs, saved
        self.__dict__.update(attrs)

    def save_for_backward(self, *tensors) -> None:
        self.saved_tensors = tensors


def _empty(like: Tensor) -> Tensor:
    return like.new_empty(0)


def _or_none(t: Tensor) -> Tensor | None:
    return None if t.numel() == 0 and t.dim() == 1 else t


def _grads_out(grads, inputs, needs) -> list[Tensor]:
    """One tensor per input: its gradient where asked for (zeros where the Function has none,
    e.g. for zoneout masks), an empty tensor elsewhere; the shapes the fake kernel promises."""
    out = []
    for g, t, n in zip(grads, inputs, needs, strict=False):
        if not n or t is None:
            out.append(_empty(inputs[0]))
        else:
            out.append(torch.zeros_like(t) if g is None else g.contiguous())
    return out


def _fake_grads(inputs, needs) -> list[Tensor]:
    return [t.new_empty(t.shape) if (n and t is not None) else _empty(inputs[0]) for t, n in zip(inputs, needs,
                                                                                              strict=False)]


def _register_autograd(forward_op, backward_op, reference, *, n_in: int, n_out: int) -> None:
    """Autograd between a family's two ops. The forward op takes ``n_in`` tensors then its
    scalars, and returns ``n_out`` differentiable tensors then the buffers its backward reads;
    the backward op takes the output gradients, the tensor inputs, ``Hs``, the buffers, the
    scalars and which inputs need a gradient. With ``create_graph=True`` (double backward) the
    gradients come from autograd through the plain form instead."""

    def setup(ctx, inputs, output):  # (torch calls it with these keyword names)
        ctx.save_for_backward(*inputs[:n_in], *output)
        ctx.scalars = tuple(inputs[n_in:])

    def grad(ctx, *grads):
        saved = ctx.saved_tensors
        tensors, outs, buffers = saved[:n_in], saved[n_in : n_in + n_out], saved[n_in + n_out :]
        grads = tuple(torch.zeros_like(o) if g is None else g for g, o in zip(grads[:n_out], outs, strict=True))
        if plain_backward_needed(*grads):
            return differentiable_grads(reference, ctx, tensors, ctx.scalars, grads)
        needs = list(ctx.needs_input_grad[:n_in])
        result = backward_op(*grads, *tensors, outs[0], *buffers, *ctx.scalars, needs)
        return (*(g if n else None for g, n in zip(result, needs, strict=True)), *([None] * len(ctx.scalars)))

    forward_op.register_autograd(grad, setup_context=setup)


# -- LSTM family ----------------------------------------------------------------------------------
@torch.library.custom_op("rnnkit::lstm_forward", mutates_args=())
def _lstm_forward(
    xp: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, w_hr: Opt, ln_hw: Opt, ln_hb: Opt, ln_cw: Opt, ln_cb: Opt,
    peep: Opt, drop: Opt, keep_h: Opt, keep_c: Opt, eps: float, keep_from: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    ctx = _Ctx()
    Hs, c_last = _LSTM.forward(ctx, xp, h0, c0, w_hh, w_hr, ln_hw, ln_hb, ln_cw, ln_cb, peep, drop, keep_h, keep_c,
                               eps, keep_from)
    G, C, TC, Cs, M, Araw, stats_g, stats_c = ctx.buffers

    def e() -> Tensor:  # a fresh empty tensor per slot: outputs may not alias each other
        return _empty(xp)

    # the LN statistics are one (2, T, B, 1) tensor each: two outputs that must not alias, so copies (T*B values)
    sg = (stats_g[0].clone(), stats_g[1].clone()) if stats_g is not None else (e(), e())
    sc = (stats_c[0].clone(), stats_c[1].clone()) if stats_c is not None else (e(), e())
    return (Hs, c_last, G, C, TC, e() if Cs is C else Cs, M if w_hr is not None else e(),
            e() if Araw is None else Araw, sg[0], sg[1], sc[0], sc[1])


@_lstm_forward.register_fake
def _(xp, h0, c0, w_hh, w_hr, ln_hw, ln_hb, ln_cw, ln_cb, peep, drop, keep_h, keep_c, eps, keep_from):
    T, B, G4 = xp.shape
    H, R = G4 // 4, h0.size(1)
    zoned = keep_h is not None or keep_c is not None
    new = xp.new_empty

    def opt(on: bool, *shape: int) -> Tensor:
        return new(*shape) if on else new(0)

    lg, lc = ln_hw is not None, ln_cw is not None
    return (new(T, B, R), new(B, H), new(T, B, G4), new(T, B, H), new(T, B, H), opt(zoned, T, B, H),
            opt(w_hr is not None, T, B, H), opt(lg, T, B, G4), opt(lg, T, B, 1), opt(lg, T, B, 1), opt(lc, T, B, 1),
            opt(lc, T, B, 1))


@torch.library.custom_op("rnnkit::lstm_backward", mutates_args=())
def _lstm_backward(
    dHs: Tensor, dcT: Tensor, xp: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, w_hr: Opt, ln_hw: Opt, ln_hb: Opt,
    ln_cw: Opt, ln_cb: Opt, peep: Opt, drop: Opt, keep_h: Opt, keep_c: Opt, Hs: Tensor, G: Tensor, C: Tensor,
    TC: Tensor, Cs: Tensor, M: Tensor, Araw: Tensor, sg0: Tensor, sg1: Tensor, sc0: Tensor, sc1: Tensor, eps: float,
    keep_from: int, needs: list[bool],
) -> list[Tensor]:
    stats_g = None if _or_none(sg0) is None else torch.stack([sg0, sg1])  # (2, T, B, 1), as _LSTM saves it
    stats_c = None if _or_none(sc0) is None else torch.stack([sc0, sc1])
    Cs = C if _or_none(Cs) is None else Cs
    inputs = (xp, h0, c0, w_hh, w_hr, ln_hw, ln_hb, ln_cw, ln_cb, peep, drop, keep_h, keep_c)
    ctx = _Ctx(tuple(needs) + (False, False), (*inputs[1:], Hs, xp), eps=eps, keep_from=keep_from,
               buffers=(G, C, TC, Cs, _or_none(M), _or_none(Araw), stats_g, stats_c))
    grads = _LSTM.backward(ctx, dHs.contiguous(), dcT.contiguous())
    return _grads_out(grads, inputs, needs)


@_lstm_backward.register_fake
def _(dHs, dcT, xp, h0, c0, w_hh, w_hr, ln_hw, ln_hb, ln_cw, ln_cb, peep, drop, keep_h, keep_c, *rest):
    return _fake_grads((xp, h0, c0, w_hh, w_hr, ln_hw, ln_hb, ln_cw, ln_cb, peep, drop, keep_h, keep_c), rest[-1])


_register_autograd(_lstm_forward, _lstm_backward, lstm_reference, n_in=13, n_out=2)


def lstm_op(*args) -> tuple[Tensor, Tensor]:
    """:func:`~rnnkit.scan.fast.lstm_sequence`'s Function arguments -> ``(Hs, c_last)`` through the op."""
    out = _lstm_forward(*args)
    return out[0], out[1]


# -- GRU family -----------------------------------------------------------------------------------
@torch.library.custom_op("rnnkit::gru_forward", mutates_args=())
def _gru_forward(
    xp: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Opt, ln_hh: Opt, drop: Opt, keep: Opt, eps: float, keep_from: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    ctx = _Ctx()
    Hs = _GRU.forward(ctx, xp, h0, w_hh, b_hh, ln_hh, drop, keep, eps, keep_from)
    RZ, N, HH, Araw, stats = ctx.buffers
    st = (stats[0].clone(), stats[1].clone()) if stats is not None else (_empty(xp), _empty(xp))  # no aliasing
    return Hs, RZ, N, HH, _empty(xp) if Araw is None else Araw, st[0], st[1]


@_gru_forward.register_fake
def _(xp, h0, w_hh, b_hh, ln_hh, drop, keep, eps, keep_from):
    T, B, G3 = xp.shape
    H = G3 // 3
    new = xp.new_empty
    ln = ln_hh is not None
    return (new(T, B, H), new(T, B, 2 * H), new(T, B, H), new(T, B, G3), new(T, B, G3) if ln else new(0),
            new(T, B, 1) if ln else new(0), new(T, B, 1) if ln else new(0))


@torch.library.custom_op("rnnkit::gru_backward", mutates_args=())
def _gru_backward(
    dHs: Tensor, xp: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Opt, ln_hh: Opt, drop: Opt, keep: Opt, Hs: Tensor,
    RZ: Tensor, N: Tensor, HH: Tensor, Araw: Tensor, s0: Tensor, s1: Tensor, eps: float, keep_from: int,
    needs: list[bool],
) -> list[Tensor]:
    inputs = (xp, h0, w_hh, b_hh, ln_hh, drop, keep)
    stats = None if _or_none(s0) is None else (s0, s1)
    ctx = _Ctx(tuple(needs) + (False, False), (*inputs[1:], Hs, xp), eps=eps, keep_from=keep_from,
               buffers=(RZ, N, HH, _or_none(Araw), stats))
    return _grads_out(_GRU.backward(ctx, dHs.contiguous()), inputs, needs)


@_gru_backward.register_fake
def _(dHs, xp, h0, w_hh, b_hh, ln_hh, drop, keep, *rest):
    return _fake_grads((xp, h0, w_hh, b_hh, ln_hh, drop, keep), rest[-1])


_register_autograd(_gru_forward, _gru_backward, gru_reference, n_in=7, n_out=1)


def gru_op(*args) -> Tensor:
    """:func:`~rnnkit.scan.fast.gru_sequence`'s Function arguments -> ``Hs`` through the op."""
    return _gru_forward(*args)[0]


# -- Elman and IndRNN -----------------------------------------------------------------------------
@torch.library.custom_op("rnnkit::simple_forward", mutates_args=())
def _simple_forward(
    xp: Tensor, h0: Tensor, w_hh: Tensor, drop: Opt, keep: Opt, activation: str, keep_from: int,
) -> tuple[Tensor, Tensor]:
    ctx = _Ctx()
    Hs = _Simple.forward(ctx, xp, h0, w_hh, drop, keep, activation, keep_from)
    Ht = ctx.saved_tensors[5]
    return Hs, _empty(xp) if Ht is None else Ht


@_simple_forward.register_fake
def _(xp, h0, w_hh, drop, keep, activation, keep_from):
    return xp.new_empty(xp.shape), (xp.new_empty(xp.shape) if keep is not None else xp.new_empty(0))


@torch.library.custom_op("rnnkit::simple_backward", mutates_args=())
def _simple_backward(
    dHs: Tensor, xp: Tensor, h0: Tensor, w_hh: Tensor, drop: Opt, keep: Opt, Hs: Tensor, Ht: Tensor,
    activation: str, keep_from: int, needs: list[bool],
) -> list[Tensor]:
    inputs = (xp, h0, w_hh, drop, keep)
    ctx = _Ctx(tuple(needs) + (False, False), (h0, w_hh, drop, keep, Hs, _or_none(Ht), xp), activation=activation,
               keep_from=keep_from)
    return _grads_out(_Simple.backward(ctx, dHs.contiguous()), inputs, needs)


@_simple_backward.register_fake
def _(dHs, xp, h0, w_hh, drop, keep, *rest):
    return _fake_grads((xp, h0, w_hh, drop, keep), rest[-1])


_register_autograd(_simple_forward, _simple_backward, simple_reference, n_in=5, n_out=1)


def simple_op(*args) -> Tensor:
    """:func:`~rnnkit.scan.fast.simple_sequence`'s Function arguments -> ``Hs`` through the op."""
    return _simple_forward(*args)[0]
