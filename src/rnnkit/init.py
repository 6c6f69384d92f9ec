"""Initialisers against exploding and vanishing gradients: :mod:`rnnkit.cells.initialisers`.

They live beside the cells (which call them for ``forget_bias``/``chrono_init``) so that the
cells import nothing above them; this module is their public name, ``rnnkit.init``.
"""

from rnnkit.cells.initialisers import (
    INITIALISERS,
    chrono_init_,
    forget_gate_bias_,
    gate_layouts,
    identity_recurrent_,
    initialise_,
    orthogonal_recurrent_,
)

__all__ = [
    "INITIALISERS", "chrono_init_", "forget_gate_bias_", "gate_layouts", "identity_recurrent_", "initialise_",
    "orthogonal_recurrent_",
]
