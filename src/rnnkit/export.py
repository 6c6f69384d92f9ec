"""ONNX export of a task's inference model, checked against onnxruntime.

``rnnkit export RUN_DIR`` writes ``RUN_DIR/onnx/``: the task's inference graphs
(:mod:`rnnkit.onnx_graphs`: forecasting with scaling inside, probabilities, Viterbi tags, a
seq2seq encoder and one-step decoder, a generator's init and step graphs, CTC frames), with
dynamic batch and time axes; ``model.json`` (the graphs' files and sha256, vocabularies, special
ids); and ``run_onnx.py``, a copy of :mod:`rnnkit.onnx_runner`, which runs them with numpy and
onnxruntime alone. Every graph is then run in onnxruntime at batch sizes 1, 3 and 8 and at two
lengths, and compared with PyTorch (outputs within ``atol``, integer outputs equal).

How loops export: torch's own RNN kernels (rnn/gru/lstm cells) become ONNX's ``RNN``/``GRU``/
``LSTM`` operators, whose time axis is dynamic; other cells are unrolled by the tracer, so their
sequence graphs are fixed to the export's length (a dynamic time axis is refused for them, with
the reason, and the check runs at that length only). Layers that would take a parallel scan
(minGRU/minLSTM, DEER) run their sequential path while exporting (same values). Viterbi is a
TorchScript loop (ONNX ``Loop``); autoregressive decoding is the runner's loop over the step graph.

:func:`export_onnx` and :func:`check_onnx` export and check any module's forward pass at fixed
shapes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit._files import atomic_path, write_bytes_atomic

__all__ = ["check_bundle", "check_onnx", "export_bundle", "export_onnx", "export_run", "exportable_paths"]

BATCHES, LENGTHS = (1, 3, 8), (5, 12)  # the shapes every exported graph is checked at
EXAMPLE = (2, 7)  # the shape graphs are traced at


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


def _as_tuple(out) -> tuple[Tensor, ...]:
    return tuple(out) if isinstance(out, tuple | list) else (out,)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_bundle(bundle, out_dir: str | os.PathLike, *, task: str = "", opset: int = 17) -> Path:
    """Write every graph of ``bundle`` (:class:`rnnkit.onnx_graphs.OnnxBundle`) to ``out_dir``,
    then ``model.json`` (with the files' sha256) and the standalone runner ``run_onnx.py``."""
    from rnnkit.onnx_graphs import dynamic_time_reason

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    graphs, fixed = {}, {}
    for g in bundle.graphs:
        axes = {k: dict(v) for k, v in g.dynamic_axes.items()}
        reason = dynamic_time_reason(g.module) if g.has_time else None
        if reason is not None:  # unrolled by the tracer: the time axis stays the example's
            axes = {k: {a: n for a, n in v.items() if n != "time"} for k, v in axes.items()}
            fixed[g.name] = {"length": EXAMPLE[1], "reason": reason}
        path = out / f"{g.name}.onnx"
        with torch.no_grad(), warnings.catch_warnings(), exportable_paths(g.module), atomic_path(path) as tmp:
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
            torch.onnx.export(g.module.eval(), g.example(*EXAMPLE), str(tmp), dynamo=False, input_names=g.input_names,
                              output_names=g.output_names, dynamic_axes=axes, opset_version=opset)
        graphs[g.name] = {"file": path.name, "sha256": _sha256(path), "inputs": g.input_names,
                          "outputs": g.output_names}
    spec = {"format": "rnnkit-onnx", "version": 1, "task": task, "kind": bundle.kind, "graphs": graphs,
            "fixed_time": fixed, **bundle.config}
    from rnnkit import onnx_runner

    shutil.copyfile(onnx_runner.__file__, out / "run_onnx.py")
    write_bytes_atomic(out / "model.json", json.dumps(spec, indent=1).encode())  # last: a complete export has it
    return out


def check_bundle(bundle, out_dir: str | os.PathLike, *, atol: float = 1e-4, batches=BATCHES,
                 lengths=LENGTHS) -> float:
    """Run every exported graph in onnxruntime at each batch size and length (the export's length
    only, for a graph with a fixed time axis) and compare with PyTorch; the max difference of the
    floating outputs (integer and boolean outputs must be equal). ``AssertionError`` otherwise."""
    import onnxruntime as ort

    out = Path(out_dir)
    spec = json.loads((out / "model.json").read_text())
    worst = 0.0
    for g in bundle.graphs:
        session = ort.InferenceSession(str(out / f"{g.name}.onnx"), providers=["CPUExecutionProvider"])
        shapes = [EXAMPLE[1]] if g.name in spec["fixed_time"] else list(lengths)
        for b in batches:
            for t in shapes if g.has_time else shapes[:1]:
                args = g.example(b, t)
                with torch.no_grad(), exportable_paths(g.module):
                    want = [w.detach().cpu().numpy() for w in _as_tuple(g.module.eval()(*args))]
                used = {i.name for i in session.get_inputs()}  # ONNX drops an input the graph does not read
                got = session.run(None, {n: a.detach().cpu().numpy() for n, a in zip(g.input_names, args, strict=True)
                                         if n in used})
                for name, x, y in zip(g.output_names, got, want, strict=True):
                    where = f"{g.name}.onnx output {name!r} at batch {b}, length {t}"
                    if x.shape != y.shape:
                        raise AssertionError(f"{where}: onnxruntime shape {x.shape}, PyTorch {y.shape}")
                    if y.dtype.kind in "biu":
                        if not np.array_equal(x, y):
                            raise AssertionError(f"{where}: onnxruntime and PyTorch differ")
                        continue
                    diff = float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max()) if y.size else 0.0
                    if not diff <= atol:
                        raise AssertionError(f"{where}: onnxruntime differs from PyTorch by {diff:.3g} (> {atol:g})")
                    worst = max(worst, diff)
    return worst


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *,
               atol: float = 1e-4) -> tuple[Path, float]:
    """Export a trained run's inference model to the directory ``out`` (default
    ``RUN_DIR/onnx``) and check it (see the module docstring). Returns ``(directory, max diff)``."""
    from rnnkit.tasks.runner import load_run

    task, _, meta, model = load_run(run_dir)
    bundle = task.onnx_bundle(model, meta)
    path = export_bundle(bundle, out or Path(run_dir) / "onnx", task=task.name)
    return path, check_bundle(bundle, path, atol=atol)
