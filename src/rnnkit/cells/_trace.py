"""Whether the PyTorch stack is looking through rnnkit's code right now.

rnnkit's fast kernels are ``torch.autograd.Function`` s that write into reused buffers with
``out=`` ops. Eager autograd runs them as they are; Dynamo (``torch.compile``), ``torch.export``,
the TorchScript tracer (ONNX) and ``torch.func`` transforms (vmap, grad, jvp) cannot see through
such code. Under Dynamo and export each kernel runs as a ``torch.library`` custom op
(:mod:`rnnkit.scan.fast.ops`: one opaque node per layer, the same kernels inside); under torch.func
transforms and TorchScript tracing it runs its *traceable form*: the same recurrence in plain
differentiable torch ops (:mod:`rnnkit.scan.fast.reference`), with the same values.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["graph_capture", "traceable_needed", "transform_active", "values_readable"]


def transform_active(x: Tensor) -> bool:
    """Whether ``x`` is being traced by a torch.func transform (vmap, grad, jvp). (Under Dynamo
    the question is not asked: it cannot trace the check, and the traced code is plain anyway.)"""
    if torch.compiler.is_compiling():
        return False
    if torch._C._functorch.is_functorch_wrapped_tensor(x):
        return True
    # the legacy vmap (torch._vmap_internals, which gradcheck's batched-gradient check uses)
    # (its dispatch key, "Batched", is not in the DispatchKey enum; read the set's names)
    return "Batched" in str(torch._C._dispatch_keys(x))


def _captured(x: Tensor) -> bool:
    """Dynamo or export is tracing, or ``x`` is one of their stand-ins (a fake or functional tensor)."""
    return not values_readable() or isinstance(x, torch._subclasses.FakeTensor) or torch._is_functional_tensor(x)


def traceable_needed(x: Tensor) -> bool:
    """True under ``torch.compile``, ``torch.export``, TorchScript tracing, a torch.func transform,
    or when ``x`` is a fake or functional tensor (the tracers' stand-ins)."""
    return torch.jit.is_tracing() or transform_active(x) or _captured(x)


def graph_capture(x: Tensor) -> bool:
    """True under ``torch.compile`` or ``torch.export`` (and their fake or functional tensors), where
    rnnkit's kernels run as ``torch.library`` custom ops (:mod:`rnnkit.scan.fast.ops`); False under
    torch.func transforms and TorchScript tracing, which take the plain form instead."""
    return _captured(x) and not (torch.jit.is_tracing() or transform_active(x))


def values_readable() -> bool:
    """Whether tensor values may be read in Python (``int(t)``, ``bool(t.any())``) here: not under
    ``torch.compile`` or ``torch.export``, where a value-dependent branch breaks the graph. There
    the code takes the branch that is right for any values (e.g. mask every step for lengths)."""
    return not (torch.compiler.is_compiling() or torch.compiler.is_exporting())
