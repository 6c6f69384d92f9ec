"""rnnkit: recurrent neural networks on PyTorch.

Cells (one step each), scans (how steps run over time), and layers (:class:`Recurrent` for any
cell; :class:`RNN`, :class:`GRU`, :class:`LSTM` as drop-ins for torch.nn's), and the five
sequence topologies (:mod:`rnnkit.models`).

The names below load on first use (PEP 562), so that ``rnnkit --help`` and other commands that
need no model do not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_WHERE = {
    "ElmanCell": "rnnkit.cells", "GRUCell": "rnnkit.cells", "LSTMCell": "rnnkit.cells", "MinGRUCell": "rnnkit.cells",
    "MinLSTMCell": "rnnkit.cells", "RecurrentCell": "rnnkit.cells", "make_cell": "rnnkit.cells",
    "IndRNNCell": "rnnkit.cells.indrnn", "LayerNormGRUCell": "rnnkit.cells.layernorm",
    "LayerNormLSTMCell": "rnnkit.cells.layernorm", "PeepholeLSTMCell": "rnnkit.cells.peephole",
    "GRU": "rnnkit.layers", "LSTM": "rnnkit.layers", "RNN": "rnnkit.layers", "PathReport": "rnnkit.layers",
    "Recurrent": "rnnkit.layers", "DeerGRUCell": "rnnkit.scan.deer",
    "Forecaster": "rnnkit.models", "Generator": "rnnkit.models", "LinearChainCRF": "rnnkit.models",
    "OneToOne": "rnnkit.models", "RecurrentConfig": "rnnkit.models", "Seq2Seq": "rnnkit.models",
    "LexicalSeq2Seq": "rnnkit.models", "FrameForecaster": "rnnkit.models", "PointerGenerator": "rnnkit.models",
    "SequenceClassifier": "rnnkit.models", "SequenceRegressor": "rnnkit.models", "SequenceTagger": "rnnkit.models",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value  # once
        return value
    try:  # a subpackage used as an attribute: rnnkit.cells, rnnkit.scan, ...
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})

