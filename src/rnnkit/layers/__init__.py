"""Layers: the Recurrent driver and the torch.nn drop-ins."""

from rnnkit.layers.dropin import GRU, LSTM, RNN
from rnnkit.layers.engine import PathReport, run_stack
from rnnkit.layers.recurrent import Recurrent

__all__ = ["GRU", "LSTM", "RNN", "PathReport", "Recurrent", "run_stack"]
