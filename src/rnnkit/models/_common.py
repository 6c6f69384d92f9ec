"""Pieces the models share: token-or-vector input, lengths and masks, and the state forms.

State forms. :class:`rnnkit.Recurrent` takes and returns its state *stacked*: a tensor
``(N, B, S)`` or a tuple of ``(N, B, S_k)`` (N = L * D). Initial states computed by a model (a
condition, an encoder bridge) come *flat*, a tuple of ``L * K`` tensors ``(B, S_k)``, and
:func:`stacked_state` turns them into the stacked form. Stepping goes through
:meth:`rnnkit.Recurrent.step` (the one stack driver), whose :class:`~rnnkit.layers.engine.StepState`
carries each sequence's noise and reorders with ``index_select(0, ...)`` in beam search.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.layers.checks import check_lengths
from rnnkit.models.config import RecurrentConfig
from rnnkit.scan.sequential import length_mask as time_major_mask

__all__ = [
    "InputLayer", "check_tokens", "length_mask", "prepare_lengths", "require_unidirectional", "stacked_state",
]

StackedState = Tensor | tuple[Tensor, ...]


# -- lengths and masks -------------------------------------------------------------------------
def prepare_lengths(lengths: Tensor | list[int] | None, batch: int, steps: int, device: torch.device) -> Tensor | None:
    """Validate ``lengths`` (each in ``[1, steps]``) and put them on ``device`` as int64."""
    if lengths is None:
        return None
    return check_lengths(lengths, batch, steps).to(device)


def length_mask(lengths: Tensor | None, batch: int, steps: int, device: torch.device) -> Tensor:
    """``mask[b, t] = t < lengths[b]``: ``(B, T)`` bool, all True without lengths."""
    if lengths is None:
        return torch.ones(batch, steps, dtype=torch.bool, device=device)
    return time_major_mask(lengths.to(device), steps).t()  # (T, B) -> (B, T)


# -- inputs ------------------------------------------------------------------------------------
def check_tokens(x: object, vocab_size: int, name: str = "tokens", dims: int = 2) -> Tensor:
    """``x`` must be an integer tensor of rank ``dims`` with ids in ``[0, vocab_size)``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a Tensor of token ids, got {type(x).__name__}")
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids, got dtype {x.dtype}")
    if x.dim() != dims:
        layout = "(batch, time)" if dims == 2 else "(batch,)"
        raise ValueError(f"{name} must have shape {layout}, got {tuple(x.shape)}")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= vocab_size):
        raise ValueError(f"{name} must hold ids in [0, {vocab_size}), got values in [{int(x.min())}, {int(x.max())}]")
    return x


class InputLayer(nn.Module):
    """Token ids ``(B, T)`` through an embedding, or feature vectors ``(B, T, I)`` as they are.

    Exactly one of ``input_size`` (vectors) and ``vocab_size`` (tokens; ``embedding_dim`` wide,
    ``padding_idx`` gets a zero, frozen embedding) is given. ``output_size`` is what the
    recurrent layer reads.
    """

    def __init__(
        self, input_size: int | None = None, vocab_size: int | None = None, embedding_dim: int | None = None,
        padding_idx: int | None = None,
    ) -> None:
        super().__init__()
        if (input_size is None) == (vocab_size is None):
            raise ValueError(
                f"give exactly one of input_size (feature vectors) and vocab_size (token ids), got "
                f"input_size={input_size!r}, vocab_size={vocab_size!r}"
            )
        self.vocab_size = vocab_size
        if vocab_size is not None:
            if embedding_dim is None:
                raise ValueError("vocab_size needs embedding_dim (the width of the token embedding)")
            self.embedding: nn.Embedding | None = nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx)
            self.output_size = embedding_dim
        else:
            if embedding_dim is not None or padding_idx is not None:
                raise ValueError("embedding_dim/padding_idx only apply to token input (vocab_size)")
            self.embedding = None
            self.output_size = int(input_size)

    def forward(self, x: Tensor) -> Tensor:
        if self.embedding is not None:
            return self.embedding(check_tokens(x, self.vocab_size, "x"))  # (B, T, E)
        if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point():
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a float tensor (batch, time, {self.output_size}), got {shape}")
        if x.size(-1) != self.output_size:
            raise ValueError(f"x.size(-1) must equal input_size. Expected {self.output_size}, got {x.size(-1)}")
        return x

    def extra_repr(self) -> str:
        return f"tokens, vocab_size={self.vocab_size}" if self.embedding is not None else f"vectors, {self.output_size}"


def require_unidirectional(config: RecurrentConfig, who: str) -> None:
    if config.bidirectional:
        raise ValueError(
            f"{who} generates left to right and cannot use a bidirectional layer (it would read the future); "
            "set bidirectional=False"
        )


# -- state forms ---------------------------------------------------------------------------------
def stacked_state(flat: tuple[Tensor, ...], num_entries: int) -> StackedState:
    """A flat tuple of ``L * K`` tensors ``(B, S_k)`` (entry ``l * K + k`` is layer l's state entry
    k) -> the stacked form :class:`rnnkit.Recurrent` takes."""
    parts = tuple(torch.stack(flat[k::num_entries]) for k in range(num_entries))  # each (L, B, S_k)
    return parts[0] if num_entries == 1 else parts
