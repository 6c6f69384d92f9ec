"""ONNX export of a task's model, checked against onnxruntime.

``rnnkit export RUN_DIR`` traces the model's batch forward pass (the function training uses:
forecasts, class logits, tag emissions, teacher-forced decoder logits, CTC frame scores) on the
task's example input with torch's TorchScript-based ONNX exporter, then runs the file in
onnxruntime and compares with PyTorch (max absolute difference, required <= 1e-4).

How loops export: the fused path of a layer (torch's own RNN kernels, chosen for rnn/gru/lstm
cells) becomes ONNX's ``LSTM``/``GRU``/``RNN`` operator; the sequential path (any other cell, and
the step-by-step decoders) is unrolled by tracing, one block of operators per time step. Layers
that would take a parallel scan (minGRU/minLSTM, DEER: custom autograd functions with no ONNX
form) are switched to their sequential reference path while exporting (same values). Either
way the exported graph is fixed to the example's batch size and sequence length: export with the
shapes you will serve. Autoregressive generation (greedy, sampling, beam) stays in Python; export
its step or its teacher-forced pass.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["check_onnx", "export_onnx", "export_run", "exportable_paths"]


class _FirstOutput(nn.Module):
    """``module(*args)`` with ``(output, state)`` tuples reduced to the output."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: Tensor) -> Tensor:
        out = self.module(*args)
        return out[0] if isinstance(out, tuple | list) else out


@contextmanager
def exportable_paths(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every :class:`rnnkit.Recurrent` in ``module`` that would take a parallel
    scan runs its sequential reference path instead (fused and sequential paths trace to ONNX)."""
    from rnnkit.layers.engine import choose_backend
    from rnnkit.layers.recurrent import Recurrent

    changed = []
    for layer in module.modules():
        if isinstance(layer, Recurrent) and layer.backend != "sequential":
            probe = torch.zeros(1, 2, layer.cells[0].input_size)
            if choose_backend(layer.cells, probe, layer.backend).name == "parallel":
                changed.append((layer, layer.backend))
                layer.backend = "sequential"
    try:
        yield module
    finally:
        for layer, backend in changed:
            layer.backend = backend


def export_onnx(module: nn.Module, args: tuple[Tensor, ...], path: str | os.PathLike, *,
                input_names: list[str] | None = None, opset: int = 17) -> Path:
    """Trace ``module(*args)`` into an ONNX file at ``path`` (eval mode, fixed shapes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _FirstOutput(module).eval()
    with torch.no_grad(), warnings.catch_warnings(), exportable_paths(module):
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(wrapper, args, str(path), dynamo=False, input_names=input_names, output_names=["output"],
                          opset_version=opset)
    return path


def check_onnx(path: str | os.PathLike, module: nn.Module, args: tuple[Tensor, ...], *,
               atol: float = 1e-4) -> float:
    """Run ``path`` in onnxruntime on ``args``; return the max absolute difference from PyTorch,
    raising ``AssertionError`` above ``atol``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    feeds = {n: a.detach().cpu().numpy() for n, a in zip(names, args, strict=False)}
    got = session.run(None, feeds)[0]
    with torch.no_grad():
        want = _FirstOutput(module).eval()(*args).detach().cpu().numpy()
    if got.shape != want.shape:
        raise AssertionError(f"{path}: onnxruntime output shape {got.shape} != PyTorch {want.shape}")
    diff = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) if want.size else 0.0
    if not diff <= atol:
        raise AssertionError(f"{path}: onnxruntime differs from PyTorch by {diff:.3g} (> {atol:g})")
    return diff


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *,
               atol: float = 1e-4) -> tuple[Path, float]:
    """Export a trained run's model to ``out`` (default ``RUN_DIR/model.onnx``) and check it."""
    from rnnkit.tasks.runner import load_run

    task, _, meta, model = load_run(run_dir)
    module, args, names = task.export_inputs(model, meta)
    path = export_onnx(module, args, out or Path(run_dir) / "model.onnx", input_names=names)
    return path, check_onnx(path, module, args, atol=atol)
