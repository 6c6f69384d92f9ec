"""The adding problem (Hochreiter & Schmidhuber, "Long short-term memory", 1997, experiment 4),
in the form used by Le et al. (2015) and Arjovsky et al. (2016).

Each input step carries two numbers ``x_t = (v_t, m_t)``: a value ``v_t ~ U(0, 1)`` and a marker
``m_t`` in {0, 1}. Exactly two markers are 1, one in the first half of the sequence and one in the
second; the target is the sum of the two marked values, ``y = v_a + v_b``, read after the last
step. Answering the constant 1 scores ``MSE = Var(v_a + v_b) = 2/12 = 0.167``; beating it means
carrying ``v_a`` across at least T/2 steps, which is why the problem probes the vanishing
gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from rnnkit.cells import make_cell
from rnnkit.layers import Recurrent

__all__ = ["AddingBatches", "AddingModel", "adding_baseline_mse", "adding_batch"]


def adding_baseline_mse() -> float:
    """MSE of always answering 1 (the mean target): ``Var(U + U) = 1/6``."""
    return 1.0 / 6.0


def adding_batch(batch: int, steps: int, *, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """``(x (B, T, 2), y (B,))`` for the adding problem of length ``steps`` (>= 2)."""
    if steps < 2:
        raise ValueError(f"the adding problem needs at least 2 steps, got {steps}")
    half = steps // 2
    values = torch.rand(batch, steps, generator=generator, dtype=dtype)  # (B, T)
    first = torch.randint(0, half, (batch,), generator=generator)  # (B,) in the first half
    second = torch.randint(half, steps, (batch,), generator=generator)  # (B,) in the second half
    markers = torch.zeros(batch, steps, dtype=dtype)
    rows = torch.arange(batch)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = torch.stack([values, markers], dim=-1)  # (B, T, 2)
    y = values[rows, first] + values[rows, second]  # (B,)
    return x, y


class AddingBatches(Dataset):
    """``count`` batches, batch ``i`` drawn from a generator seeded with ``seed * 100003 + i``:
    the same data whatever the order or the process reading it. Use with ``batch_size=None``."""

    def __init__(self, count: int, batch: int, steps: int, seed: int = 0) -> None:
        self.count, self.batch, self.steps, self.seed = count, batch, steps, seed

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        if not 0 <= i < self.count:
            raise IndexError(i)
        g = torch.Generator().manual_seed(self.seed * 100003 + i)
        return adding_batch(self.batch, self.steps, generator=g)


class AddingModel(nn.Module):
    """A recurrent layer of any registered cell and a linear read-out of the last output.

    ``forward(x (B, T, 2), state=None, lengths=None) -> (y_hat (B,), state)``."""

    def __init__(self, cell: str, hidden: int, *, num_layers: int = 1, **cell_options) -> None:
        super().__init__()
        self.rnn = Recurrent(make_cell(cell, 2, hidden, **cell_options), num_layers=num_layers)
        self.head = nn.Linear(self.rnn.output_size, 1)

    def forward(self, x: Tensor, state=None, lengths: Tensor | None = None) -> tuple[Tensor, object]:
        out, state = self.rnn(x, state, lengths)  # (B, T, H)
        if lengths is None:
            last = out[:, -1]  # (B, H)
        else:
            last = out[torch.arange(out.size(0)), lengths.to(out.device) - 1]  # (B, H): each sequence's end
        return self.head(last).squeeze(-1), state  # (B,)
