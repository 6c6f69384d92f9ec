"""Callbacks that watch the gradient: a gradient-flow monitor and a non-finite guard."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from rnnkit.diagnostics.gradflow import layer_grad_norms, recurrent_layers, timestep_grad_norms
from rnnkit.diagnostics.jacobian import trajectory_jacobian_norms

__all__ = ["GradientFlowMonitor", "NonFiniteError", "NonFiniteGuard"]


def _inner(pl_module: nn.Module) -> nn.Module:
    return getattr(pl_module, "model", pl_module)


class GradientFlowMonitor(L.Callback):
    """Record, log and plot how the gradient flows during training.

    * every ``every_n_steps`` optimizer steps: the gradient norm of each layer (before
      clipping), logged as ``grad_norm/<layer>``;
    * every ``probe_every_n_steps`` steps, on a fixed ``probe_batch`` (the module needs
      ``compute_loss(batch)``, as :class:`~rnnkit.train.TrainModule` has): the per-timestep
      ``||dL/dh_t||`` of every Recurrent layer, and the mean estimated spectral norm of each
      cell's step Jacobian along the trajectory (``jacobian_iters`` power iterations).

    At the end of fitting, rank 0 writes ``grad_norms.png``, ``timestep_grad_norms.png``,
    ``jacobian_norms.png`` and ``gradflow.json`` to ``out_dir`` (default: the trainer's log dir).
    """

    def __init__(
        self, every_n_steps: int = 10, *, probe_batch: Any = None, probe_every_n_steps: int | None = None,
        jacobian_iters: int = 10, jacobian_stride: int = 1, out_dir: str | None = None, plot: bool = True,
    ) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.every, self.probe_batch = every_n_steps, probe_batch
        self.probe_every = probe_every_n_steps or (every_n_steps * 10 if probe_batch is not None else None)
        self.jacobian_iters, self.jacobian_stride = jacobian_iters, jacobian_stride
        self.out_dir, self.plot = out_dir, plot
        self.layer_norms: list[tuple[int, dict[str, float]]] = []
        self.timestep_norms: list[tuple[int, dict[str, list[list[float]]]]] = []  # layer -> (N, T)
        self.jacobian_norms: list[tuple[int, dict[str, list[float]]]] = []  # layer -> (N,)
        self._last_probe = -1

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        step = trainer.global_step
        if step % self.every:
            return
        norms = layer_grad_norms(_inner(pl_module))
        self.layer_norms.append((step, norms))
        finite = {f"grad_norm/{k}": v for k, v in norms.items() if math.isfinite(v)}
        for logger in trainer.loggers:
            logger.log_metrics(finite, step=step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if self.probe_batch is None or self.probe_every is None or step == self._last_probe:
            return
        if step % self.probe_every == 0 or step == 1:
            self._last_probe = step
            self.measure(pl_module, step)

    def measure(self, pl_module: L.LightningModule, step: int) -> None:
        """Measure per-timestep gradient norms and Jacobian norms on the probe batch now."""
        compute = getattr(pl_module, "compute_loss", None)
        if compute is None:
            raise TypeError(f"GradientFlowMonitor's probe needs {type(pl_module).__name__}.compute_loss(batch)")
        model = _inner(pl_module)
        was_training = model.training
        model.eval()  # no dropout in a measurement
        try:
            batch = move_data_to_device(self.probe_batch, pl_module.device)
            with torch.enable_grad():
                calls = timestep_grad_norms(model, lambda: compute(batch)[0])
            self.timestep_norms.append((step, {k: hp.norms().tolist() for k, hp in calls.items()}))
            layers = dict(recurrent_layers(model))
            jac = {}
            for name, hp in calls.items():
                sig = trajectory_jacobian_norms(layers[name], hp.inputs, iters=self.jacobian_iters,
                                                stride=self.jacobian_stride)
                jac[name] = sig.mean(-1).tolist()
            self.jacobian_norms.append((step, jac))
        finally:
            model.train(was_training)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        out = Path(self.out_dir or trainer.log_dir or trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        data = {"layer_norms": self.layer_norms, "timestep_norms": self.timestep_norms,
                "jacobian_norms": self.jacobian_norms}
        (out / "gradflow.json").write_text(json.dumps(data, allow_nan=True))
        if not self.plot:
            return
        from rnnkit.diagnostics.plots import plot_distance_curves, plot_jacobian, plot_layer_norms

        if self.layer_norms:
            plot_layer_norms(self.layer_norms, out / "grad_norms.png")
        if self.timestep_norms:
            curves = {}
            for step, layers in self.timestep_norms:
                for name, per_cell in layers.items():
                    curves[f"{name} cell 0, step {step}"] = per_cell[0][::-1]  # by distance from the end
            plot_distance_curves(curves, out / "timestep_grad_norms.png", normalise=False)
        if self.jacobian_norms:
            names = sorted({n for _, layers in self.jacobian_norms for n in layers})
            series = {}
            for name in names:
                pts = [(s, layers[name]) for s, layers in self.jacobian_norms if name in layers]
                for c in range(len(pts[0][1])):
                    series[f"{name} cell {c}"] = ([s for s, _ in pts], [v[c] for _, v in pts])
            plot_jacobian(series, out / "jacobian_norms.png", xlabel="optimizer step")


class NonFiniteError(RuntimeError):
    """A loss or gradient became NaN or infinite; the message names the step and the layer."""


def _all_finite(obj: Any) -> bool:
    if isinstance(obj, Tensor):
        return not obj.is_floating_point() or bool(torch.isfinite(obj).all())
    if isinstance(obj, Mapping):
        return all(_all_finite(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return all(_all_finite(v) for v in obj)
    return True


class NonFiniteGuard(L.Callback):
    """Stop (``action="stop"``, raising :class:`NonFiniteError`) or skip the optimizer step
    (``action="skip"``: gradients dropped, a warning, the step counted in ``skipped``) when the
    loss or any gradient is not finite.

    The message names the global step, epoch and batch, and the layer: for gradients the first
    module (in registration order) whose parameters have a non-finite gradient; for the loss,
    with ``locate=True``, the first module whose output is non-finite when the batch is replayed
    (needs the module's ``compute_loss(batch)``; RNG streams are restored afterwards).
    """

    def __init__(self, action: str = "stop", *, locate: bool = True) -> None:
        if action not in ("stop", "skip"):
            raise ValueError(f"action must be 'stop' or 'skip', got {action!r}")
        self.action, self.locate = action, locate
        self.skipped: list[tuple[int, str]] = []
        self._batch: Any = None
        self._pending: str | None = None

    def _where(self, trainer: L.Trainer) -> str:
        batch = trainer.fit_loop.epoch_loop.batch_progress.current.ready - 1
        return f"at global step {trainer.global_step} (epoch {trainer.current_epoch}, batch {batch})"

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch, self._pending = batch, None

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        if bool(torch.isfinite(loss.detach()).all()):
            return
        msg = f"non-finite loss ({float(loss.detach().float().sum())}) {self._where(trainer)}"
        if self.locate:
            msg += f"; {self._replay(pl_module)}"
        if self.action == "stop":
            raise NonFiniteError(msg)
        self._pending = msg

    def _replay(self, pl_module: L.LightningModule) -> str:
        compute = getattr(pl_module, "compute_loss", None)
        if compute is None or self._batch is None:
            return "layer not located (the module has no compute_loss(batch) to replay the batch)"
        if not _all_finite(self._batch):
            return "the input batch itself contains non-finite values"
        first: list[str] = []

        def hook(module, args, output, name):
            if not first and not _all_finite(output):
                first.append(f"{name} ({type(module).__name__})")

        handles = [m.register_forward_hook(partial(hook, name=name)) for name, m in pl_module.named_modules() if name]
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                compute(self._batch)
        finally:
            for h in handles:
                h.remove()
        if first:
            return f"first non-finite output in layer {first[0]}"
        return "every layer's output is finite: the loss function produced it"

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        msg = self._pending or self._bad_gradients(trainer, pl_module)
        self._pending = None
        if msg is None:
            return
        if self.action == "stop":
            raise NonFiniteError(msg)
        optimizer.zero_grad(set_to_none=True)  # no parameter moves in this step
        self.skipped.append((trainer.global_step, msg))
        rank_zero_warn(f"{msg}; skipping this optimizer step")

    def _bad_gradients(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str | None:
        named = [(n, p.grad) for n, p in pl_module.named_parameters() if p.grad is not None]
        if not named:
            return None
        finite = torch.stack([torch.isfinite(g).all() for _, g in named]).tolist()  # one sync
        if all(finite):
            return None
        bad: dict[str, list[str]] = {}
        for (name, _), ok in zip(named, finite, strict=True):
            if not ok:
                owner, _, pname = name.rpartition(".")
                bad.setdefault(owner or "<model>", []).append(pname)
        layer, params = next(iter(bad.items()))
        return (f"non-finite gradient {self._where(trainer)} in layer {layer!r} (parameters {', '.join(params)}); "
                f"{len(bad)} layer(s) affected: {', '.join(bad)}")
