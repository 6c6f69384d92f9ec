"""Gradient-flow diagnostics: how far back ``dL/dh_t`` reaches, per-layer gradient norms, the
recurrent Jacobian's spectral norm, PNG plots, and the adding-problem report (``rnnkit diagnose``).

The measurement functions import torch only; plots (matplotlib) and the report (Lightning) are
imported from their own modules.
"""

from rnnkit.diagnostics.adding import AddingModel, adding_baseline_mse, adding_batch
from rnnkit.diagnostics.gradflow import (
    HiddenProbe,
    layer_grad_norms,
    probe_hidden,
    probed_forward,
    recurrent_layers,
    timestep_grad_norms,
)
from rnnkit.diagnostics.jacobian import jacobian_spectral_norm, trajectory_jacobian_norms

__all__ = [
    "AddingModel", "HiddenProbe", "adding_baseline_mse", "adding_batch", "jacobian_spectral_norm", "layer_grad_norms",
    "probe_hidden", "probed_forward", "recurrent_layers", "timestep_grad_norms", "trajectory_jacobian_norms",
]
