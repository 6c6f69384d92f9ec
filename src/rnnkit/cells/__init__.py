"""Cells: one step of a recurrence each (see :mod:`rnnkit.cells.base` for the contract)."""

from rnnkit.cells.base import GatedWeightsCell, RecurrentCell, State
from rnnkit.cells.elman import ElmanCell
from rnnkit.cells.gru import GRUCell
from rnnkit.cells.lstm import LSTMCell

__all__ = ["ElmanCell", "GRUCell", "GatedWeightsCell", "LSTMCell", "RecurrentCell", "State"]
