"""Scans: how a cell's steps run over time (sequential reference, fused vendor kernels)."""

from rnnkit.scan.fused import fused_layer, fused_unavailable
from rnnkit.scan.sequential import length_mask, reverse_padded, sequential_scan

__all__ = ["fused_layer", "fused_unavailable", "length_mask", "reverse_padded", "sequential_scan"]
