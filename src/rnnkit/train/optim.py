"""Optimisers and learning-rate schedules from a config dataclass."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["OPTIMIZERS", "SCHEDULES", "OptimConfig", "build_optimizer", "build_scheduler"]

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "linear", "step", "plateau")


@dataclass
class OptimConfig:
    name: str = "adam"              # adam | adamw | sgd | rmsprop
    lr: float = 1e-3                # peak learning rate
    weight_decay: float = 0.0       # decoupled for adamw, L2 for the others
    momentum: float = 0.0           # sgd and rmsprop only
    beta1: float = 0.9              # adam/adamw first-moment decay
    beta2: float = 0.999            # adam/adamw second-moment decay
    schedule: str = "constant"      # constant | cosine | linear (decay to min_lr_ratio) | step | plateau
    warmup_steps: int = 0           # linear warm-up from 0 over this many optimizer steps
    total_steps: int | None = None  # cosine/linear horizon; None: the trainer's estimate
    min_lr_ratio: float = 0.0       # cosine/linear floor, as a fraction of lr
    step_size: int = 1000           # "step": multiply by gamma every step_size steps
    gamma: float = 0.5              # "step" and "plateau" decay factor
    patience: int = 5               # "plateau": validations without improvement before decaying
    monitor: str = "val_loss"       # "plateau": the metric to watch

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.name!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


def build_optimizer(cfg: OptimConfig, params: Any) -> torch.optim.Optimizer:
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


class _Warmup:
    """``lr(step) / lr``: linear warm-up, then constant, cosine or linear decay, or steps.

    A class rather than a closure so that ``LambdaLR.state_dict`` (which saves callable objects'
    attributes) stays plain data."""

    def __init__(self, cfg: OptimConfig, total: int) -> None:
        self.schedule, self.warmup, self.total = cfg.schedule, cfg.warmup_steps, max(total, 1)
        self.floor, self.step_size, self.gamma = cfg.min_lr_ratio, cfg.step_size, cfg.gamma

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.schedule == "step":
            return self.gamma ** ((step - self.warmup) // self.step_size)
        if self.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if self.schedule == "cosine" else 1.0 - progress
        return self.floor + (1.0 - self.floor) * decay


def build_scheduler(cfg: OptimConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> dict[str, Any] | None:
    """Lightning's scheduler dict, or None for a constant rate without warm-up."""
    if cfg.schedule == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=cfg.gamma, patience=cfg.patience)
        return {"scheduler": sched, "monitor": cfg.monitor, "interval": "epoch"}
    if cfg.schedule == "constant" and cfg.warmup_steps == 0:
        return None
    total = cfg.total_steps if cfg.total_steps is not None else total_steps
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, _Warmup(cfg, total))
    return {"scheduler": sched, "interval": "step"}


def trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]
