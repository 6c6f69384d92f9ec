"""``RecurrentConfig``: the cell configuration every model in :mod:`rnnkit.models` takes.

A model never hard-codes a cell: it receives a config, and builds its recurrent layers from it
through the cell registry (:func:`rnnkit.make_cell`), so any registered cell name works, now and
when new cells are registered.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rnnkit.cells.registry import make_cell
from rnnkit.layers.recurrent import Recurrent

__all__ = ["RecurrentConfig", "as_config"]


@dataclass
class RecurrentConfig:
    """How to build a (possibly stacked, bidirectional) recurrent layer for a model."""

    cell: str = "lstm"  # any name registered in rnnkit.cells.registry.CELLS: rnn, rnn_relu, gru, lstm, ...
    hidden_size: int = 64  # H: the cell's hidden width in every layer
    num_layers: int = 1  # L: stacked layers, layer l > 0 reads layer l - 1's output
    bidirectional: bool = False  # D = 2: a reverse direction per layer (encoders, taggers, classifiers only)
    merge: str = "concat"  # how two directions combine: concat (width 2O), sum, mul, ave (width O)
    dropout: float = 0.0  # dropout on each layer's output except the last, in training
    backend: str = "auto"  # the scan: auto, fused, parallel or sequential (see rnnkit.Recurrent)
    cell_options: dict[str, Any] = field(default_factory=dict)  # extra cell keyword arguments, e.g. {"bias": False}

    def __post_init__(self) -> None:
        if not isinstance(self.hidden_size, int) or self.hidden_size < 1:
            raise ValueError(f"RecurrentConfig.hidden_size must be a positive int, got {self.hidden_size!r}")
        if not isinstance(self.num_layers, int) or self.num_layers < 1:
            raise ValueError(f"RecurrentConfig.num_layers must be a positive int, got {self.num_layers!r}")

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def build(self, input_size: int, **factory: Any) -> Recurrent:
        """A batch-first :class:`rnnkit.Recurrent` reading ``input_size`` features.

        ``factory`` takes ``device``/``dtype``, passed to the cell.
        """
        cell = make_cell(self.cell, input_size, self.hidden_size, **self.cell_options, **factory)
        return Recurrent(
            cell, num_layers=self.num_layers, bidirectional=self.bidirectional, merge=self.merge,
            dropout=self.dropout, batch_first=True, backend=self.backend,
        )

    def output_size(self) -> int:
        """Width of the built layer's output (``O``, or ``2O`` for concat-merged directions),
        found from a throwaway cell so that callers can size what reads it before building."""
        cell = make_cell(self.cell, 1, self.hidden_size, **self.cell_options)
        return cell.output_size * (self.directions if self.merge == "concat" else 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def as_config(config: RecurrentConfig | dict[str, Any] | None, name: str = "config") -> RecurrentConfig:
    """Accept a config, a dict of its fields (from a CLI or a YAML file), or None for the defaults."""
    if config is None:
        return RecurrentConfig()
    if isinstance(config, RecurrentConfig):
        return config
    if isinstance(config, dict):
        unknown = sorted(set(config) - set(RecurrentConfig.__dataclass_fields__))
        if unknown:
            raise ValueError(f"{name} has unknown field(s) {unknown}; RecurrentConfig takes "
                             f"{sorted(RecurrentConfig.__dataclass_fields__)}")
        return RecurrentConfig(**config)
    raise TypeError(f"{name} must be a RecurrentConfig, a dict or None, got {type(config).__name__}")
