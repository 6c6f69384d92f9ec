"""rnnkit: recurrent neural networks on PyTorch.

Cells (one step each), scans (how steps run over time), and layers (:class:`Recurrent` for any
cell; :class:`RNN`, :class:`GRU`, :class:`LSTM` as drop-ins for torch.nn's).
"""

from rnnkit.cells import ElmanCell, GRUCell, LSTMCell, RecurrentCell, make_cell
from rnnkit.layers import GRU, LSTM, RNN, PathReport, Recurrent

__version__ = "0.1.0"

__all__ = [
    "GRU", "LSTM", "RNN", "ElmanCell", "GRUCell", "LSTMCell", "PathReport", "Recurrent", "RecurrentCell", "make_cell",
]
