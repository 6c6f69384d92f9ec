"""Many-to-one: a whole sequence to one vector of class logits or regression targets.

Symbols: B batch, T steps, I input features (or token ids with an embedding), O the recurrent
layer's output width (2H for concat-merged bidirectional), C outputs.

    o_{1..T} = Recurrent(x_{1..T})                       (zero at padded steps)
    "last":      z = o_L                                 (L = each sequence's own length; a
                                                          bidirectional layer: [fw o_L; bw o_1])
    "mean":      z = (1/L) sum_{t<=L} o_t
    "max":       z = max_{t<=L} o_t                      (per feature)
    "attention": a_t = softmax_t(v^T tanh(W o_t + b)),  z = sum_{t<=L} a_t o_t
    y = W_y z + b_y                                      (B, C)

The attention pooling is Bahdanau et al.'s (2015) additive score against a learned query, as in
Yang et al., "Hierarchical attention networks for document classification", NAACL 2016. Padded
steps never reach z: changing their inputs changes nothing.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.models._common import InputLayer, length_mask, prepare_lengths
from rnnkit.models.attention import masked_softmax
from rnnkit.models.config import RecurrentConfig, as_config

__all__ = ["POOLINGS", "SequenceClassifier", "SequencePooling", "SequenceRegressor"]

POOLINGS = ("last", "mean", "max", "attention")


class SequencePooling(nn.Module):
    """Pool ``outputs (B, T, O)`` over each sequence's real steps into ``(B, O)``.

    ``split`` (for ``"last"``): the width of the forward half of a concat-merged bidirectional
    output, whose backward half is read at step 1 instead of step L.
    """

    def __init__(self, mode: str, size: int, split: int | None = None, attention_size: int | None = None) -> None:
        super().__init__()
        if mode not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {mode!r}")
        self.mode, self.size, self.split = mode, size, split
        if mode == "attention":
            self.proj = nn.Linear(size, attention_size or size)  # W, b
            self.v = nn.Linear(attention_size or size, 1, bias=False)  # v

    def weights(self, outputs: Tensor, mask: Tensor) -> Tensor:
        """The attention weights ``(B, T)`` (zero at padded steps); ``"attention"`` mode only."""
        if self.mode != "attention":
            raise ValueError(f"weights() needs pooling='attention', this pooling is {self.mode!r}")
        scores = self.v(torch.tanh(self.proj(outputs))).squeeze(-1)  # (B, T)
        return masked_softmax(scores, mask)

    def forward(self, outputs: Tensor, lengths: Tensor | None) -> Tensor:
        B, T, _ = outputs.shape
        mask = length_mask(lengths, B, T, outputs.device)  # (B, T)
        if self.mode == "last":
            last = (mask.sum(1) - 1).view(B, 1, 1).expand(B, 1, outputs.size(2))
            z = outputs.gather(1, last).squeeze(1)  # (B, O)
            if self.split is not None:  # the backward direction ends at step 1
                z = torch.cat([z[:, : self.split], outputs[:, 0, self.split :]], dim=1)
            return z
        if self.mode == "mean":
            m = mask.unsqueeze(-1).to(outputs.dtype)
            return (outputs * m).sum(1) / m.sum(1)
        if self.mode == "max":
            return outputs.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)
        a = self.weights(outputs, mask)  # (B, T)
        return torch.bmm(a.unsqueeze(1), outputs).squeeze(1)  # (B, 1, T) @ (B, T, O) -> (B, O)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, size={self.size}"


class _SequenceToVector(nn.Module):
    """Input layer -> Recurrent -> pooling -> linear head; see the module docstring."""

    def __init__(
        self, out_features: int, config: RecurrentConfig | dict | None, *, input_size: int | None,
        vocab_size: int | None, embedding_dim: int | None, padding_idx: int | None, pooling: str,
        attention_size: int | None, head_dropout: float,
    ) -> None:
        super().__init__()
        self.config = as_config(config)
        if pooling == "last" and self.config.bidirectional and self.config.merge != "concat":
            raise ValueError(
                f"pooling='last' with a bidirectional layer needs merge='concat' (to read the backward direction "
                f"at step 1), got merge={self.config.merge!r}; use another pooling or merge"
            )
        self.inputs = InputLayer(input_size, vocab_size, embedding_dim, padding_idx)
        self.rnn = self.config.build(self.inputs.output_size)
        width = self.rnn.output_size
        split = width // 2 if self.config.bidirectional and pooling == "last" else None
        self.pool = SequencePooling(pooling, width, split, attention_size)
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(width, out_features)

    def encode(self, x: Tensor, lengths: Tensor | list[int] | None = None) -> Tensor:
        """The pooled sequence vector ``z (B, O)``."""
        h = self.inputs(x)  # (B, T, I)
        lengths = prepare_lengths(lengths, h.size(0), h.size(1), h.device)
        outputs, _ = self.rnn(h, lengths=lengths)  # (B, T, O)
        return self.pool(outputs, lengths)

    def attention_weights(self, x: Tensor, lengths: Tensor | list[int] | None = None) -> Tensor:
        """``(B, T)`` weights of ``pooling="attention"``, for plotting."""
        h = self.inputs(x)
        lengths = prepare_lengths(lengths, h.size(0), h.size(1), h.device)
        outputs, _ = self.rnn(h, lengths=lengths)
        return self.pool.weights(outputs, length_mask(lengths, h.size(0), h.size(1), h.device))

    def forward(self, x: Tensor, lengths: Tensor | list[int] | None = None) -> Tensor:
        return self.head(self.dropout(self.encode(x, lengths)))


class SequenceClassifier(_SequenceToVector):
    """Many-to-one classifier: ``forward(x, lengths=None) -> logits (B, num_classes)``.

    ``x`` is ``(B, T, input_size)`` floats, or ``(B, T)`` token ids when ``vocab_size`` and
    ``embedding_dim`` are given. ``pooling``: ``"last"``, ``"mean"``, ``"max"`` or
    ``"attention"``; ``config`` any :class:`RecurrentConfig` (bidirectional allowed).
    """

    def __init__(
        self, num_classes: int, config: RecurrentConfig | dict | None = None, *, input_size: int | None = None,
        vocab_size: int | None = None, embedding_dim: int | None = None, padding_idx: int | None = None,
        pooling: str = "last", attention_size: int | None = None, head_dropout: float = 0.0,
    ) -> None:
        super().__init__(num_classes, config, input_size=input_size, vocab_size=vocab_size,
                         embedding_dim=embedding_dim, padding_idx=padding_idx, pooling=pooling,
                         attention_size=attention_size, head_dropout=head_dropout)
        self.num_classes = num_classes


class SequenceRegressor(_SequenceToVector):
    """Many-to-one regressor: ``forward(x, lengths=None) -> predictions (B, output_size)``; the
    same options as :class:`SequenceClassifier`, trained with a regression loss."""

    def __init__(
        self, output_size: int = 1, config: RecurrentConfig | dict | None = None, *, input_size: int | None = None,
        vocab_size: int | None = None, embedding_dim: int | None = None, padding_idx: int | None = None,
        pooling: str = "last", attention_size: int | None = None, head_dropout: float = 0.0,
    ) -> None:
        super().__init__(output_size, config, input_size=input_size, vocab_size=vocab_size,
                         embedding_dim=embedding_dim, padding_idx=padding_idx, pooling=pooling,
                         attention_size=attention_size, head_dropout=head_dropout)
        self.output_size = output_size
