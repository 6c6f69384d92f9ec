"""rnnkit: recurrent neural networks on PyTorch.

Cells (one step each), scans (how steps run over time), and layers (:class:`Recurrent` for any
cell; :class:`RNN`, :class:`GRU`, :class:`LSTM` as drop-ins for torch.nn's).
"""

from rnnkit.cells import ElmanCell, GRUCell, LSTMCell, MinGRUCell, MinLSTMCell, RecurrentCell, make_cell
from rnnkit.cells.indrnn import IndRNNCell
from rnnkit.cells.layernorm import LayerNormGRUCell, LayerNormLSTMCell
from rnnkit.cells.peephole import PeepholeLSTMCell
from rnnkit.layers import GRU, LSTM, RNN, PathReport, Recurrent
from rnnkit.scan.deer import DeerGRUCell

__version__ = "0.1.0"

__all__ = [
    "GRU", "LSTM", "RNN", "DeerGRUCell", "ElmanCell", "GRUCell", "LSTMCell", "MinGRUCell", "MinLSTMCell", "PathReport",
    "Recurrent", "RecurrentCell", "make_cell",
]
__all__ += ["IndRNNCell", "LayerNormGRUCell", "LayerNormLSTMCell", "PeepholeLSTMCell"]

# the five sequence topologies (rnnkit.models)
from rnnkit.models import (  # noqa: E402
    Forecaster,
    Generator,
    LinearChainCRF,
    OneToOne,
    RecurrentConfig,
    Seq2Seq,
    SequenceClassifier,
    SequenceRegressor,
    SequenceTagger,
)

__all__ += [
    "Forecaster", "Generator", "LinearChainCRF", "OneToOne", "RecurrentConfig", "Seq2Seq", "SequenceClassifier",
    "SequenceRegressor", "SequenceTagger",
]
