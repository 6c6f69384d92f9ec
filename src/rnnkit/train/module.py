"""``TrainModule``: a LightningModule that trains any ``nn.Module`` with a loss, metrics, an
optimiser and schedule, gradient clipping and, optionally, truncated BPTT.

The model protocol: ``model(x)`` (or ``model(x, lengths=lengths)`` when the batch has lengths)
returns a prediction, or a tuple whose first element is the prediction (rnnkit layers and models
return ``(output, state)``). Truncated BPTT also passes ``state=`` and needs the state back as the
tuple's second element.

Gradient clipping (Pascanu et al. 2013): ``clip_algorithm="norm"`` rescales all gradients by
``min(1, clip_val / ||g||_2)`` (``||g||`` over every parameter together); ``"value"`` clamps
each entry to ``[-clip_val, clip_val]``. The clip lives in the module, not the Trainer, so it
applies the same way to automatic optimisation and to TBPTT's manual steps.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.train.checkpoint import check_state_dict
from rnnkit.train.data import ResumableLoader
from rnnkit.train.losses import LossFn, as_batch, get_loss, get_metric, step_mask
from rnnkit.train.optim import OptimConfig, build_optimizer, build_scheduler, trainable
from rnnkit.train.tbptt import TBPTTConfig, detach_state, reset_state, tbptt_chunks

__all__ = ["TrainModule"]

CLIP_ALGORITHMS = ("norm", "value")


class TrainModule(L.LightningModule):
    """Train ``model`` on batches (see :mod:`rnnkit.train.losses` for the batch format).

    Args:
        model: any ``nn.Module`` following the protocol above; stored as ``self.model``.
        loss: a name from :data:`rnnkit.train.losses.LOSSES` or ``fn(pred, target[, mask])``.
        optim: optimiser and schedule (:class:`OptimConfig`).
        metrics: ``{name: metric name or fn}`` logged as ``val_<name>``/``test_<name>``.
        clip_val: gradient clipping threshold, ``None`` for none.
        clip_algorithm: ``"norm"`` or ``"value"``.
        tbptt: truncated BPTT (:class:`TBPTTConfig`) or ``None`` for full BPTT.
        model_config: plain data describing the model (cell, sizes, ...), saved in checkpoints.
        per_step_target: whether targets are per step; ``None`` infers it from the shapes.

    Logs ``train_loss`` per step and ``val_loss`` (+ metrics) per validation.
    """

    def __init__(
        self, model: nn.Module, loss: str | LossFn = "mse", *, optim: OptimConfig | None = None,
        metrics: Mapping[str, str | LossFn] | None = None, clip_val: float | None = None,
        clip_algorithm: str = "norm", tbptt: TBPTTConfig | None = None,
        model_config: Mapping[str, Any] | None = None, per_step_target: bool | None = None,
    ) -> None:
        super().__init__()
        if clip_algorithm not in CLIP_ALGORITHMS:
            raise ValueError(f"clip_algorithm must be one of {CLIP_ALGORITHMS}, got {clip_algorithm!r}")
        if clip_val is not None and clip_val <= 0:
            raise ValueError(f"clip_val must be positive or None, got {clip_val}")
        self.model = model
        self.loss_fn = get_loss(loss)
        self.optim_config = optim or OptimConfig()
        self.metric_fns = {name: get_metric(m) for name, m in (metrics or {}).items()}
        self.clip_val, self.clip_algorithm = clip_val, clip_algorithm
        self.tbptt = tbptt
        self.model_config = dict(model_config or {})
        self.per_step_target = per_step_target
        self.automatic_optimization = tbptt is None
        self._carried: Any = None  # stateful TBPTT: the state carried to the next batch
        self._pending_rng: dict[str, Any] | None = None

    # -- forward and loss ---------------------------------------------------------------------
    def run_model(self, x: Tensor, lengths: Tensor | None = None, state: Any = None) -> tuple[Tensor, Any]:
        """``(prediction, state or None)`` from the model protocol."""
        kwargs = {}
        if lengths is not None:
            kwargs["lengths"] = lengths
        if state is not None:
            kwargs["state"] = state
        out = self.model(x, **kwargs)
        if isinstance(out, tuple | list):
            return out[0], (out[1] if len(out) > 1 else None)
        return out, None

    def _is_per_step(self, pred: Tensor, y: Tensor, steps: int) -> bool:
        if self.per_step_target is not None:
            return self.per_step_target
        return y.dim() >= 2 and y.size(1) == steps and pred.dim() >= 2 and pred.size(1) == steps

    def _loss(self, pred: Tensor, y: Tensor, mask: Tensor | None, fn: LossFn | None = None) -> Tensor:
        fn = fn or self.loss_fn
        return fn(pred, y) if mask is None else fn(pred, y, mask)

    def compute_loss(self, batch: Any) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """``(loss, prediction, target, mask)`` for a whole batch, no truncation."""
        b = as_batch(batch)
        pred, _ = self.run_model(b["x"], b["lengths"])
        y = b["y"]
        mask = step_mask(b["lengths"], pred, y, b["x"].size(1)) if self._is_per_step(pred, y, b["x"].size(1)) else None
        return self._loss(pred, y, mask), pred, y, mask

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        return self.model(x, *args, **kwargs)

    # -- training -----------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        if self.tbptt is not None:
            return self._tbptt_step(batch)
        loss, *_ = self.compute_loss(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=_batch_size(batch))
        return loss

    def _tbptt_step(self, batch: Any) -> None:
        """Williams & Peng (1990) truncated BPTT, one optimiser step per chunk of ``k`` steps."""
        b = as_batch(batch)
        x, y, lengths = b["x"], b["y"], b["lengths"]
        opt = self.optimizers()
        sched = self.lr_schedulers()
        state = None
        if self.tbptt.carry_across_batches and self._carried is not None:
            state = reset_state(self._carried, b["reset"], x.size(0))
        total, weight = x.new_zeros(()), 0
        per_step = None
        for chunk in tbptt_chunks(x.size(1), self.tbptt.k, lengths):
            xc = x[:, chunk.start : chunk.stop]
            if per_step is None:  # decided on the first chunk's shapes
                per_step = self.per_step_target
                if per_step is None:
                    per_step = y.dim() >= 2 and y.size(1) == x.size(1)
            if not per_step and not chunk.last:
                with torch.no_grad():  # no loss here: carry the state forward only
                    _, state = chunk.run(self.run_model, xc, state)
                continue
            if not per_step and chunk.lengths is not None and bool((chunk.lengths == 0).any()):
                raise ValueError(
                    "truncated BPTT with one target per sequence needs every sequence to reach the last chunk "
                    f"(steps {chunk.start}..{chunk.stop - 1}); got lengths {lengths.tolist()}: bucket the batch by "
                    "length or use per-step targets"
                )
            pred, state = chunk.run(self.run_model, xc, state)
            yc = y[:, chunk.start : chunk.stop] if per_step else y
            mask = chunk.mask(pred) if per_step else None
            loss = self._loss(pred, yc, mask)
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()
            if sched is not None and not isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step()
            state = detach_state(state)
            n = int(mask.sum()) if mask is not None else xc.size(1)
            total, weight = total + loss.detach() * n, weight + n
        if self.tbptt.carry_across_batches:
            self._carried = state
        self.log("train_loss", total / max(weight, 1), prog_bar=True, batch_size=x.size(0))
        return None

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Runs after the callbacks' hook (so monitors see the raw gradient); Lightning clips the
        # automatic path itself via configure_gradient_clipping, TBPTT's manual steps clip here.
        if not self.automatic_optimization and self.clip_val is not None:
            self.clip_gradients(optimizer, gradient_clip_val=self.clip_val, gradient_clip_algorithm=self.clip_algorithm)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        val = self.clip_val if self.clip_val is not None else gradient_clip_val
        alg = self.clip_algorithm if self.clip_val is not None else gradient_clip_algorithm
        if val is not None:
            self.clip_gradients(optimizer, gradient_clip_val=val, gradient_clip_algorithm=alg)

    def configure_optimizers(self) -> Any:
        opt = build_optimizer(self.optim_config, trainable(self.model))
        total = 1
        if self.optim_config.schedule in ("cosine", "linear") and self.optim_config.total_steps is None:
            total = int(self.trainer.estimated_stepping_batches)
        sched = build_scheduler(self.optim_config, opt, total)
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}

    # -- evaluation ---------------------------------------------------------------------------
    def _evaluate(self, batch: Any, prefix: str) -> Tensor:
        loss, pred, y, mask = self.compute_loss(batch)
        n = _batch_size(batch)
        self.log(f"{prefix}_loss", loss, prog_bar=True, sync_dist=True, batch_size=n)
        for name, fn in self.metric_fns.items():
            self.log(f"{prefix}_{name}", self._loss(pred, y, mask, fn), sync_dist=True, batch_size=n)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._evaluate(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        b = as_batch(batch) if isinstance(batch, Mapping | list | tuple) else {"x": batch, "lengths": None}
        return self.run_model(b["x"], b["lengths"])[0]

    # -- resume: data position, RNG streams, carried state, and validation of the weights ------
    def on_train_start(self) -> None:
        loop = self.trainer.fit_loop
        for loader in _flatten(self.trainer.train_dataloader):
            if isinstance(loader, ResumableLoader):
                loader.bind(lambda: (self.trainer.current_epoch, loop.epoch_loop.batch_progress.current.processed))
        if self._pending_rng is not None:  # after the data iterator exists, as in the uninterrupted run
            _set_rng(self._pending_rng)
            self._pending_rng = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        part: dict[str, Any] = {"model_config": self.model_config, "rng": _get_rng()}
        if self._carried is not None:
            part["tbptt_state"] = self._carried
        checkpoint["rnnkit"] = part

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        source = checkpoint.get("rnnkit_source", "checkpoint")
        if "state_dict" in checkpoint:
            check_state_dict(self.state_dict(), checkpoint["state_dict"], source)
        part = checkpoint.get("rnnkit", {})
        saved = part.get("model_config")
        if saved and self.model_config and saved != self.model_config:
            raise ValueError(f"{source}: model_config {saved} does not match this module's {self.model_config}")
        self._pending_rng = part.get("rng")
        self._carried = part.get("tbptt_state")


def _batch_size(batch: Any) -> int:
    return int(as_batch(batch)["x"].size(0))


def _flatten(loaders: Any) -> list[Any]:
    if isinstance(loaders, Mapping):
        return [x for v in loaders.values() for x in _flatten(v)]
    if isinstance(loaders, list | tuple):
        return [x for v in loaders for x in _flatten(v)]
    return [loaders]


def _get_rng() -> dict[str, Any]:
    """Every global random stream, as tensors and ints (stored without pickle)."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "mt": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["mt"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state((nps["name"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"],
                         nps["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))

