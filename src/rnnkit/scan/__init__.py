"""Scans: how a cell's steps run over time (sequential reference, fused vendor kernels)."""

from rnnkit.scan.deer import DeerGRUCell, DeerNotConverged, deer_gru, deer_solve
from rnnkit.scan.fast import fast_scan, fast_unavailable
from rnnkit.scan.fused import fused_layer, fused_unavailable
from rnnkit.scan.parallel import heinsen_scan, linear_scan, log_scan
from rnnkit.scan.sequential import length_mask, reverse_padded, sequential_scan
from rnnkit.scan.triton import triton_scan, triton_unavailable

__all__ = [
    "DeerGRUCell", "DeerNotConverged", "deer_gru", "deer_solve", "fused_layer", "fused_unavailable", "heinsen_scan",
    "length_mask", "linear_scan", "log_scan", "reverse_padded", "sequential_scan",
]
__all__ += ["fast_scan", "fast_unavailable", "triton_scan", "triton_unavailable"]
