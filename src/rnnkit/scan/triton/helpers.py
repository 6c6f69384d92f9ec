"""Small Triton device functions shared by the step kernels.

They use only triton.language builtins (``exp``, ``where``, ``reduce``...), never its
``@triton.jit``-defined helpers (``tl.sigmoid``, ``tl.sum``, ``tl.zeros_like``): those are bound
when triton is first imported, so under ``TRITON_INTERPRET=1`` set after some other library had
already imported triton they would not run in the interpreter.
"""

from __future__ import annotations

from rnnkit.scan.triton._lang import tl, triton

__all__ = ["norm1", "norm3", "norm4", "rsum", "sigmoid", "tanh"]


@triton.jit
def tanh(x):
    """``1 - 2 / (exp(2x) + 1)``: triton.language has no tanh; exact limits at +-inf."""
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def rsum(x, axis):
    """Sum along ``axis``."""
    return tl.reduce(x, axis, _add)


@triton.jit
def stats(total, sq_total, n, eps):
    """Mean and 1/std from the row's sum and sum of squares about the mean."""
    return total / n, 1.0 / tl.sqrt(sq_total / n + eps)


@triton.jit
def norm1(x, mask, n, eps):
    """Mean and 1/std of one block (``mask``ed lanes only)."""
    mean = rsum(tl.where(mask, x, 0.0), axis=0) / n
    d = tl.where(mask, x - mean, 0.0)
    return stats(mean * n, rsum(d * d, axis=0), n, eps)


@triton.jit
def norm4(x0, x1, x2, x3, mask, n, eps):
    """Mean and 1/std over four blocks of a row."""
    mean = rsum(tl.where(mask, x0 + x1 + x2 + x3, 0.0), axis=0) / n
    d0, d1 = tl.where(mask, x0 - mean, 0.0), tl.where(mask, x1 - mean, 0.0)
    d2, d3 = tl.where(mask, x2 - mean, 0.0), tl.where(mask, x3 - mean, 0.0)
    return stats(mean * n, rsum(d0 * d0 + d1 * d1 + d2 * d2 + d3 * d3, axis=0), n, eps)


@triton.jit
def norm3(x0, x1, x2, mask, n, eps):
    """Mean and 1/std over three blocks of a row."""
    mean = rsum(tl.where(mask, x0 + x1 + x2, 0.0), axis=0) / n
    d0, d1, d2 = tl.where(mask, x0 - mean, 0.0), tl.where(mask, x1 - mean, 0.0), tl.where(mask, x2 - mean, 0.0)
    return stats(mean * n, rsum(d0 * d0 + d1 * d1 + d2 * d2, axis=0), n, eps)
