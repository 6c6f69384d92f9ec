"""``triton`` and ``triton.language``, or stand-ins when triton is not installed, so that every
module of :mod:`rnnkit.scan.triton` imports without it (the kernels are then plain functions that
nothing calls: :func:`rnnkit.scan.triton.triton_unavailable` keeps layers off this path)."""

from __future__ import annotations

__all__ = ["tl", "triton"]

try:
    import triton
    import triton.language as tl
except ModuleNotFoundError:

    class _NoTriton:
        @staticmethod
        def jit(fn=None, **options):
            return fn if fn is not None else (lambda f: f)

        def __getattr__(self, name: str):
            raise ModuleNotFoundError("triton is not installed (pip install triton)")

    triton = tl = _NoTriton()
