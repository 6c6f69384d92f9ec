"""One-to-one: a single input to a single output through one recurrent step.

Symbols: B batch, I input features, O recurrent output width, C outputs.

    o, s_1 = Recurrent([x], s_0)      (one step, s_0 = 0 unless given)
    y = W_y o + b_y                   (B, C)

With one step and a zero state the recurrence reduces to a feed-forward layer of the cell's
shape: the degenerate topology, kept for completeness and as a baseline for the others (the
first of the five shapes in Karpathy, "The unreasonable effectiveness of recurrent neural
networks", 2015).
"""

from __future__ import annotations

from torch import Tensor, nn

from rnnkit.models.config import RecurrentConfig, as_config

__all__ = ["OneToOne"]


class OneToOne(nn.Module):
    """``forward(x (B, input_size)) -> (B, output_size)`` through one step of any
    :class:`RecurrentConfig` (a bidirectional layer reads the single step both ways)."""

    def __init__(self, input_size: int, output_size: int, config: RecurrentConfig | dict | None = None) -> None:
        super().__init__()
        self.config = as_config(config)
        self.input_size, self.output_size = input_size, output_size
        self.rnn = self.config.build(input_size)
        self.head = nn.Linear(self.rnn.output_size, output_size)  # W_y, b_y

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 2 or x.size(1) != self.input_size:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (batch, {self.input_size}), got {shape}")
        out, _ = self.rnn(x.unsqueeze(1))  # (B, 1, O)
        return self.head(out.squeeze(1))
