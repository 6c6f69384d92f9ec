"""Backward passes that autograd can differentiate again, for rnnkit's hand-written Functions.

A hand-written backward (``out=`` ops into reused buffers) is not itself differentiable. When a
graph of the backward is asked for (``create_graph=True``: double backward, ``gradgradcheck``) or
the backward is vmapped (per-sample gradients, gradcheck's batched-gradient check), a Function
instead differentiates its *plain form*, the same computation in ordinary torch ops, on its saved
inputs (:func:`differentiable_grads`). :func:`plain_backward_needed` says when.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.cells._trace import transform_active

__all__ = ["differentiable_grads", "plain_backward_needed"]


def plain_backward_needed(*grads: Tensor | None) -> bool:
    """Whether a Function's backward must go through the plain form: a graph of it is being
    recorded, or an incoming gradient is batched by vmap."""
    return torch.is_grad_enabled() or any(g is not None and transform_active(g) for g in grads)


def differentiable_grads(plain, ctx, inputs: tuple, scalars: tuple, grad_outputs: tuple) -> tuple:
    """A Function's backward through its plain form: the gradients of ``plain(*inputs, *scalars)``
    w.r.t. the tensor inputs autograd asks for, computed with a graph so that they can be
    differentiated again. Returns one entry per Function input (None where not needed)."""
    need = ctx.needs_input_grad
    wanted = [k for k, t in enumerate(inputs) if t is not None and need[k]]
    with torch.enable_grad():
        outputs = plain(*inputs, *scalars)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        pairs = [(o, g) for o, g in zip(outputs, grad_outputs, strict=True) if g is not None]
        grads = torch.autograd.grad([o for o, _ in pairs], [inputs[k] for k in wanted], [g for _, g in pairs],
                                    create_graph=True, allow_unused=True)
    out: list = [None] * len(need)
    for k, g in zip(wanted, grads, strict=True):
        out[k] = g
    return tuple(out)
