"""Cells: one step of a recurrence each (see :mod:`rnnkit.cells.base` for the contract)."""

from rnnkit.cells.base import GatedWeightsCell, RecurrentCell, State
from rnnkit.cells.convlstm import ConvLSTMCell
from rnnkit.cells.elman import ElmanCell
from rnnkit.cells.gru import GRUCell
from rnnkit.cells.indrnn import IndRNNCell
from rnnkit.cells.layernorm import LayerNormGRUCell, LayerNormLSTMCell
from rnnkit.cells.lstm import LSTMCell
from rnnkit.cells.minimal import MinGRUCell, MinLSTMCell
from rnnkit.cells.options import SequenceOptions
from rnnkit.cells.peephole import PeepholeLSTMCell
from rnnkit.cells.registry import CELLS, cell_names, make_cell

__all__ = [
    "CELLS", "ElmanCell", "GRUCell", "GatedWeightsCell", "LSTMCell", "MinGRUCell", "MinLSTMCell", "RecurrentCell",
    "State", "cell_names", "make_cell",
]
__all__ += ["IndRNNCell", "LayerNormGRUCell", "LayerNormLSTMCell", "PeepholeLSTMCell", "SequenceOptions"]
__all__ += ["ConvLSTMCell"]
