"""A Lightning ``Trainer`` with rnnkit's habits, from one config dataclass.

Rich progress bar, CSV and TensorBoard logs, early stopping, safetensors checkpoints with resume,
the gradient-flow monitor and the non-finite guard, mixed precision where the device allows,
and scale-out by flags: ``devices=2, strategy="ddp"`` runs 2 processes (gloo on CPU, NCCL on
GPUs), ``num_nodes`` spreads them over machines (launched by torchrun/SLURM as Lightning
expects). With :class:`~rnnkit.train.ResumableLoader` each process reads its share of every
global batch, so ``batch_size = global_batch / world_size`` reproduces a single-process run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from rnnkit.train.callbacks import GradientFlowMonitor, NonFiniteGuard
from rnnkit.train.checkpoint import SafetensorsCheckpointIO
from rnnkit.train.data import ResumableLoader
from rnnkit.train.module import TrainModule

__all__ = ["EpochProgressBar", "TrainConfig", "build_trainer", "fit", "resolve_precision"]


@dataclass
class TrainConfig:
    max_steps: int = -1                     # optimizer steps; -1: run max_epochs
    max_epochs: int | None = None           # None: 1 epoch if max_steps is -1, else unbounded
    accelerator: str = "auto"               # cpu | gpu | auto
    devices: int | str = 1                  # processes per node ("auto": every device)
    num_nodes: int = 1                      # machines
    strategy: str = "auto"                  # auto | ddp | ddp_spawn | ...
    precision: str = "32-true"              # 32-true | bf16-mixed | 16-mixed | auto (mixed where the GPU allows)
    seed: int = 0                           # seeds every RNG before fitting (seed_everything)
    out_dir: str = "runs/train"             # logs and checkpoints go under here
    name: str = "rnnkit"                    # the run's name under out_dir
    loggers: tuple[str, ...] = ("csv", "tensorboard")  # any of csv, tensorboard
    progress: bool = True                   # the rich progress bar
    log_every_n_steps: int = 10
    val_every_n_steps: int | None = None    # validate every n steps; None: at each epoch end
    early_stop_patience: int | None = None  # validations without val_loss improvement before stopping
    early_stop_below: float | None = None   # stop once val_loss falls below this
    checkpoint_every_n_steps: int | None = None  # None: at each epoch end; 0: no checkpoints
    resume: str | None = None               # a checkpoint directory, "last", or None
    grad_monitor_every: int | None = 50     # per-layer gradient norms every n steps; None: off
    nonfinite: str = "stop"                 # stop | skip | off
    deterministic: bool = False             # torch deterministic algorithms


class EpochProgressBar(RichProgressBar):
    """Lightning's rich bar, counting epochs from 1 to their number ("Epoch 3/5"), and without a
    total when training is bounded by steps (Lightning's own reads "Epoch 0/0", or "0/-2")."""

    def _get_train_description(self, current_epoch: int) -> str:
        total = self.trainer.max_epochs
        text = f"Epoch {current_epoch + 1}" + (f"/{total}" if total is not None and total > 0 else "")
        width = len(self.validation_description)
        return f"{text:{width}}" if width > len(text) else text

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)  # the logger's version number is not a training metric
        return items


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """``"auto"``: bf16-mixed on GPUs with bf16, 16-mixed on other GPUs, else 32-true."""
    if precision != "auto":
        return precision
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def build_trainer(cfg: TrainConfig, *, callbacks: list[L.Callback] | None = None,
                  distributed_sampler: bool = False, **overrides: Any) -> L.Trainer:
    """The Trainer for ``cfg``. ``distributed_sampler``: let Lightning shard plain DataLoaders
    under DDP (a ResumableLoader shards itself, so leave it False for those). ``overrides`` go
    to ``L.Trainer`` last."""
    if cfg.nonfinite not in ("stop", "skip", "off"):
        raise ValueError(f"nonfinite must be 'stop', 'skip' or 'off', got {cfg.nonfinite!r}")
    root = Path(cfg.out_dir)
    loggers: list[Any] = []
    for name in cfg.loggers:
        if name == "csv":
            loggers.append(CSVLogger(root / cfg.name, name="csv"))
        elif name == "tensorboard":
            loggers.append(TensorBoardLogger(root / cfg.name, name="tensorboard", default_hp_metric=False))
        else:
            raise ValueError(f"unknown logger {name!r}; known: csv, tensorboard")
    cbs: list[L.Callback] = list(callbacks or [])
    if cfg.progress:
        cbs.append(EpochProgressBar())
    if cfg.nonfinite != "off":
        cbs.append(NonFiniteGuard(cfg.nonfinite))
    if cfg.grad_monitor_every:
        cbs.append(GradientFlowMonitor(cfg.grad_monitor_every, out_dir=str(root / cfg.name / "gradflow")))
    if cfg.early_stop_patience is not None or cfg.early_stop_below is not None:
        cbs.append(EarlyStopping(
            "val_loss", patience=cfg.early_stop_patience or 10**9, stopping_threshold=cfg.early_stop_below,
            check_on_train_epoch_end=False,
        ))
    checkpoints = cfg.checkpoint_every_n_steps != 0
    if checkpoints:
        cbs.append(ModelCheckpoint(
            dirpath=root / cfg.name / "checkpoints", filename="{step:08d}", save_last=True, save_top_k=1,
            every_n_train_steps=cfg.checkpoint_every_n_steps or None,
        ))
    max_epochs = cfg.max_epochs if cfg.max_epochs is not None else (1 if cfg.max_steps == -1 else -1)
    kwargs: dict[str, Any] = dict(
        max_steps=cfg.max_steps, max_epochs=max_epochs, accelerator=cfg.accelerator, devices=cfg.devices,
        num_nodes=cfg.num_nodes, strategy=cfg.strategy, precision=resolve_precision(cfg.precision, cfg.accelerator),
        logger=loggers or False, callbacks=cbs, enable_progress_bar=cfg.progress,
        enable_checkpointing=checkpoints, plugins=[SafetensorsCheckpointIO()], default_root_dir=root,
        log_every_n_steps=cfg.log_every_n_steps, deterministic=cfg.deterministic,
        use_distributed_sampler=distributed_sampler, enable_model_summary=cfg.progress,
    )
    if cfg.val_every_n_steps is not None:
        kwargs.update(val_check_interval=cfg.val_every_n_steps, check_val_every_n_epoch=None)
    kwargs.update(overrides)
    return L.Trainer(**kwargs)


def fit(module: TrainModule, train: Any, val: Any = None, cfg: TrainConfig | None = None, *,
        callbacks: list[L.Callback] | None = None, **overrides: Any) -> L.Trainer:
    """Seed, build the trainer and fit; resume from ``cfg.resume`` if set. Returns the trainer."""
    cfg = cfg or TrainConfig()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # A ResumableLoader shards itself over DDP ranks; Lightning must not wrap it a second time.
    # (Lightning's flag covers every loader: a plain validation loader is then read whole by
    # every rank, which gives the same averaged metrics at some redundant cost.)
    plain = not isinstance(train, ResumableLoader)
    trainer = build_trainer(cfg, callbacks=callbacks, distributed_sampler=plain, **overrides)
    trainer.fit(module, train_dataloaders=train, val_dataloaders=val, ckpt_path=cfg.resume)
    return trainer
