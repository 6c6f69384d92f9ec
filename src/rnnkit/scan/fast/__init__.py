"""rnnkit's fast engine: one autograd Function per layer and direction, with a hand-written
backward through time, for the cells the vendor kernels cannot run (layer-normalised, peephole,
IndRNN, recurrent dropout, zoneout) and for torch's classic cells on any device.

:func:`fast_scan` has :func:`rnnkit.scan.sequential_scan`'s contract; the sequential scan stays
the reference, and tests assert the two agree in outputs and every gradient.
"""

from rnnkit.scan.fast.dispatch import cell_inputs, fast_project, fast_scan, fast_unavailable
from rnnkit.scan.fast.gru import gru_sequence
from rnnkit.scan.fast.lstm import lstm_sequence
from rnnkit.scan.fast.simple import simple_sequence

__all__ = [
    "cell_inputs", "fast_project", "fast_scan", "fast_unavailable", "gru_sequence", "lstm_sequence", "simple_sequence",
]
