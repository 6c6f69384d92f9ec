"""Input validation shared by :class:`rnnkit.Recurrent` and the torch.nn drop-ins.

Every error names the argument and the expected and received shapes; nothing is broadcast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rnnkit.cells._trace import values_readable


class RecurrentInputError(ValueError, RuntimeError):
    """A shape, size, device or length problem with a recurrent layer's input, state or lengths.

    A ``ValueError`` (rnnkit's own contract) and a ``RuntimeError`` (what ``torch.nn.RNN/GRU/LSTM``
    raise for the same mistakes), so code written against either catches it."""


class RecurrentTypeError(TypeError, ValueError, RuntimeError):
    """A dtype or type problem with a recurrent layer's input, state or lengths: a ``TypeError``
    (rnnkit), a ``ValueError`` (torch's module tests expect one for a dtype mismatch) and a
    ``RuntimeError`` (what torch's kernels raise)."""


def check_input(
    x: object, input_size: int, weight: Tensor, dims: tuple[int, ...], layout: str, feature_dim: int = -1,
    time_dims: dict[int, int] | None = None,
) -> Tensor:
    """``x`` must be a floating tensor of rank in ``dims`` with ``input_size`` features on dim
    ``feature_dim`` (channels for convolutional cells), on the weights' device and of their
    dtype. ``layout`` names the expected shape in messages. ``time_dims`` maps a rank to its time
    dim, which must not be empty; every other dim may be (an empty batch returns empty outputs,
    as torch.nn's layers do)."""
    if not isinstance(x, Tensor):
        raise RecurrentTypeError(f"input must be a Tensor or PackedSequence, got {type(x).__name__}")
    if x.dim() not in dims:
        ranks = " or ".join(map(str, dims))
        raise RecurrentInputError(f"input must have shape {layout} ({ranks}-D), got {tuple(x.shape)}")
    if x.size(feature_dim) != input_size:
        raise RecurrentInputError(
            f"input.size({feature_dim}) must be equal to input_size. Expected {input_size}, got "
            f"{x.size(feature_dim)} (input shape {tuple(x.shape)})"
        )
    time_dim = (time_dims or {}).get(x.dim())
    if time_dim is not None and x.size(time_dim) == 0:
        raise RecurrentInputError(f"input has an empty time or batch dimension: shape {tuple(x.shape)}")
    check_like(x, weight, "input")
    return x


def check_like(t: Tensor, weight: Tensor, name: str) -> None:
    """Same dtype and device as the layer's weights (autocast may change the dtype)."""
    if t.dtype != weight.dtype and not torch.is_autocast_enabled(t.device.type):
        raise RecurrentTypeError(  # torch.nn's wording, so code matching its message keeps working
            f"RNN {name} dtype ({t.dtype}) does not match weight dtype ({weight.dtype}). "
            f"Convert {name}: {name}.to({weight.dtype}), or convert model: model.to({t.dtype})"
        )
    if t.device != weight.device:
        raise RecurrentInputError(f"{name} is on {t.device} but the layer's weights are on {weight.device}")


def check_lengths(lengths: object, batch: int, steps: int) -> Tensor:
    """``lengths`` (a 1-D integer tensor or sequence of ints) must hold ``batch`` values in
    ``[1, steps]``. Returns an int64 CPU tensor."""
    if isinstance(lengths, Tensor):
        if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
            raise RecurrentTypeError(f"lengths must hold integers, got dtype {lengths.dtype}")
        values = lengths.detach().to("cpu", torch.int64)
    elif isinstance(lengths, Sequence) and all(isinstance(v, int) and not isinstance(v, bool) for v in lengths):
        values = torch.tensor(list(lengths), dtype=torch.int64)
    else:
        raise RecurrentTypeError(
            f"lengths must be a 1-D integer tensor or a list of ints, got {type(lengths).__name__}"
        )
    if values.dim() != 1 or values.numel() != batch:
        raise RecurrentInputError(f"lengths must have shape ({batch},) (one per sequence), got {tuple(values.shape)}")
    if not values_readable():  # under torch.compile/export: checked in eager calls, not traced
        return values
    too_long = (values > steps).nonzero()
    if too_long.numel():
        b = int(too_long[0])
        raise RecurrentInputError(f"lengths[{b}] = {int(values[b])} exceeds the sequence length {steps}")
    too_short = (values < 1).nonzero()
    if too_short.numel():
        b = int(too_short[0])
        raise RecurrentInputError(f"lengths[{b}] = {int(values[b])}: every sequence needs at least one step")
    return values


def check_state(
    state: object, shapes: Sequence[tuple[int, ...]], weight: Tensor, name: str, batch_dim: int = 1
) -> tuple[Tensor, ...]:
    """A state is one tensor (one expected shape) or a tuple of them; each must match its shape
    exactly. ``batch_dim`` is where the batch size sits, to name a batch mismatch as such."""
    parts = (state,) if isinstance(state, Tensor) else state
    if not isinstance(parts, tuple | list) or len(parts) != len(shapes) or not all(
        isinstance(p, Tensor) for p in parts
    ):
        kind = "a Tensor" if len(shapes) == 1 else f"a tuple of {len(shapes)} Tensors"
        raise RecurrentTypeError(f"{name} must be {kind}, got {type(state).__name__}")
    labels = [name] if len(shapes) == 1 else [f"{name}[{k}]" for k in range(len(shapes))]
    for part, shape, label in zip(parts, shapes, labels, strict=True):
        if tuple(part.shape) != tuple(shape):
            hint = ""
            if part.dim() == len(shape) and part.shape[batch_dim] != shape[batch_dim]:
                hint = f" (batch size {part.shape[batch_dim]} does not match the input's {shape[batch_dim]})"
            # torch.nn's "Expected hidden size ..., got ..." wording, naming the argument
            raise RecurrentInputError(f"Expected hidden size {tuple(shape)} for {label}, got {tuple(part.shape)}{hint}")
        check_like(part, weight, label)
    return tuple(parts)


__all__ = [
    "RecurrentInputError", "RecurrentTypeError", "check_input", "check_lengths", "check_like", "check_state",
]
