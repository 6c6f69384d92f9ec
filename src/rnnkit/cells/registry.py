"""Cells by name, so models, configs and the CLI can say ``cell="lstm"``.

Register a new cell family by adding one entry to ``CELLS``. Options a cell does not take are
an error, not silently dropped.
"""

from __future__ import annotations

import inspect
from typing import Any

from rnnkit.cells.base import RecurrentCell
from rnnkit.cells.convlstm import ConvLSTMCell
from rnnkit.cells.elman import ElmanCell
from rnnkit.cells.gru import GRUCell
from rnnkit.cells.indrnn import IndRNNCell
from rnnkit.cells.layernorm import LayerNormGRUCell, LayerNormLSTMCell
from rnnkit.cells.lstm import LSTMCell
from rnnkit.cells.minimal import MinGRUCell, MinLSTMCell
from rnnkit.cells.peephole import PeepholeLSTMCell

#: name -> (cell class, fixed keyword arguments)
CELLS: dict[str, tuple[type[RecurrentCell], dict[str, Any]]] = {
    "rnn": (ElmanCell, {"nonlinearity": "tanh"}),
    "rnn_relu": (ElmanCell, {"nonlinearity": "relu"}),
    "gru": (GRUCell, {}),
    "lstm": (LSTMCell, {}),
    "mingru": (MinGRUCell, {}),
    "minlstm": (MinLSTMCell, {}),
    "layernorm_lstm": (LayerNormLSTMCell, {}),
    "layernorm_gru": (LayerNormGRUCell, {}),
    "peephole_lstm": (PeepholeLSTMCell, {}),
    "indrnn": (IndRNNCell, {}),
    "convlstm": (ConvLSTMCell, {}),
}


def make_cell(name: str, input_size: int, hidden_size: int, **options: Any) -> RecurrentCell:
    """Build the cell registered as ``name`` (see :data:`CELLS`) with extra ``options``."""
    key = name.lower()
    if key not in CELLS:
        raise ValueError(f"unknown cell {name!r}; known cells: {', '.join(sorted(CELLS))}")
    cls, fixed = CELLS[key]
    accepted = inspect.signature(cls).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"cell {name!r} ({cls.__name__}) takes no option(s) {unknown}")
    return cls(input_size, hidden_size, **{**fixed, **options})


def cell_names(feature_dims: int | None = 1) -> list[str]:
    """The registered names, sorted: by default the cells over feature vectors (what the
    sequence models and tasks take); ``feature_dims=3`` the convolutional ones, None all."""
    return sorted(n for n, (cls, _) in CELLS.items() if feature_dims is None or cls.feature_dims == feature_dims)
