"""Train, evaluate and reload any task; the run directory.

Training goes through :mod:`rnnkit.train` (Lightning, progress bar, CSV log, gradient clipping):
:class:`TaskModule` is a :class:`~rnnkit.train.TrainModule` whose loss is the task's. A run
directory holds::

    config.json          task, TaskConfig, meta (vocabularies, scaling), dataset, metrics, baselines
    weights.safetensors  the model's state_dict
    metrics.csv          split, name, value: the task metric(s) and baselines on held-out data
    best.ckpt/           the best validation epoch's checkpoint (``keep_best``; safetensors + JSON)
    history.csv          Lightning's per-step/epoch log (train_loss, val_loss)
    learning_curve.png   train and validation loss
    <picture>.png        the task's picture (forecast, confusion matrix, attention map, ...)
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader

from rnnkit.data.collate import BucketBatchSampler
from rnnkit.tasks.base import Prepared, Task, TaskConfig, get_task
from rnnkit.tasks.plots import plot_learning_curve
from rnnkit.train import OptimConfig, TrainConfig, TrainModule, fit, load_weights

__all__ = ["RunResult", "TaskModule", "load_run", "loaders", "train_task"]


class TaskModule(TrainModule):
    """A :class:`~rnnkit.train.TrainModule` whose loss is ``task.loss(model, batch)``.

    With ``val_data`` (for tasks with ``select_on_metric``) each validation also scores the task's
    metric on those examples and logs it as ``val_<metric>``.
    """

    def __init__(self, model: nn.Module, task: Task, *, val_data: Prepared | None = None, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.task = task
        self.val_data = val_data

    def compute_loss(self, batch: Any) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        loss = self.task.loss(self.model, batch)
        return loss, loss.detach(), batch["y"], None

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        groups = getattr(self.model, "clip_groups", None)  # an ensemble: each member is clipped on its own
        if groups is None or self.clip_val is None:
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        for group in groups():
            params = [p for p in group.parameters() if p.grad is not None]
            if self.clip_algorithm == "norm":
                torch.nn.utils.clip_grad_norm_(params, self.clip_val)
            else:
                torch.nn.utils.clip_grad_value_(params, self.clip_val)
        return None

    def on_validation_epoch_end(self) -> None:
        if self.val_data is None or self.trainer.sanity_checking:
            return
        scores = self.task.evaluate(self.model, self.val_data.val, self.val_data.meta)
        # every rank scores the whole validation split, so the mean over ranks is that score
        self.log(f"val_{self.task.metric}", scores[self.task.metric], sync_dist=True, prog_bar=True)


def best_checkpoint(task: Task, run_dir: Path) -> ModelCheckpoint:
    """Lightning's ``ModelCheckpoint`` keeping the single best validation epoch as ``run_dir/best.ckpt``."""
    if task.select_on_metric:
        monitor, mode = f"val_{task.metric}", ("max" if task.higher_is_better else "min")
    else:
        monitor, mode = "val_loss", "min"
    return ModelCheckpoint(dirpath=run_dir, filename="best", monitor=monitor, mode=mode, save_top_k=1,
                           enable_version_counter=False, save_on_train_epoch_end=False)


@dataclass
class RunResult:
    task: str
    run_dir: Path
    metrics: dict[str, float]  # ours, on the test split
    baselines: dict[str, float]  # on the same split
    model: nn.Module
    data: Prepared

    @property
    def ours(self) -> float:
        return self.metrics[get_task(self.task).metric]

    @property
    def base(self) -> float:
        return self.baselines[get_task(self.task).baseline]


def loaders(task: Task, data: Prepared, cfg: TaskConfig) -> tuple[DataLoader, DataLoader]:
    collate = partial(task.collate, meta=data.meta)
    sampler = BucketBatchSampler([task.length(e) for e in data.train], cfg.batch_size, seed=cfg.seed)
    train = DataLoader(data.train, batch_sampler=sampler, collate_fn=collate)
    val_sampler = BucketBatchSampler([task.length(e) for e in data.val], cfg.batch_size * 2, shuffle=False)
    return train, DataLoader(data.val, batch_sampler=val_sampler, collate_fn=collate)


def train_task(task: Task | str, cfg: TaskConfig | None = None, out_dir: str | Path = "runs",
               run_name: str | None = None) -> RunResult:
    """Prepare the data, train, evaluate against the baselines and write the run directory."""
    task = get_task(task) if isinstance(task, str) else task
    cfg = cfg or task.config()
    torch.manual_seed(cfg.seed)
    data = task.prepare(cfg)
    model = task.build(cfg, data.meta)
    run_dir = Path(out_dir) / (run_name or task.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    keep_best = cfg.keep_best and len(data.val) > 0  # nothing to select on without a validation split
    module = TaskModule(model, task, optim=OptimConfig(lr=cfg.lr, schedule=cfg.schedule), clip_val=cfg.clip or None,
                        model_config={"task": task.name, **cfg.to_dict()},
                        val_data=data if keep_best and task.select_on_metric else None)
    train, val = loaders(task, data, cfg)
    best = best_checkpoint(task, run_dir) if keep_best else None
    if best is not None:  # a previous run's best is not this run's (every DDP rank tries: ignore_errors)
        shutil.rmtree(run_dir / "best.ckpt", ignore_errors=True)
    tcfg = TrainConfig(
        max_epochs=cfg.epochs, accelerator=cfg.accelerator, devices=cfg.devices,
        strategy="ddp" if cfg.devices > 1 else "auto", seed=cfg.seed, out_dir=str(run_dir.parent),
        name=run_dir.name, loggers=("csv",), progress=cfg.progress, log_every_n_steps=5,
        checkpoint_every_n_steps=0, grad_monitor_every=None,
    )
    trainer = fit(module, train, val, tcfg, callbacks=[best] if best else None, enable_model_summary=False,
                  use_distributed_sampler=False, enable_checkpointing=best is not None)  # see loaders
    model = module.model.cpu().eval()
    if trainer.global_rank != 0:  # DDP: rank 0 evaluates and writes the run directory
        return RunResult(task.name, run_dir, {}, {}, model, data)
    if best is not None and best.best_model_path:
        load_weights(model, best.best_model_path)  # checks every name and shape against the model
    metrics = task.evaluate(model, data.test, data.meta)
    baselines = task.baselines(data)
    save_run(run_dir, task, cfg, data.meta, model, metrics, baselines)
    logs = sorted(run_dir.glob("csv/version_*/metrics.csv"))
    if logs:
        shutil.copy(logs[-1], run_dir / "history.csv")
        plot_learning_curve(run_dir / "history.csv", run_dir / "learning_curve.png", title=task.title)
    task.picture(model, data, run_dir / task.picture_name)
    return RunResult(task.name, run_dir, metrics, baselines, model, data)


def save_run(run_dir: Path, task: Task, cfg: TaskConfig, meta: dict[str, Any], model: nn.Module,
             metrics: dict[str, float], baselines: dict[str, float]) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(run_dir / "weights.safetensors"))
    config = {"task": task.name, "config": cfg.to_dict(), "meta": meta, "dataset": task.dataset.to_dict(),
              "metric": task.metric, "metrics": metrics, "baselines": baselines}
    (run_dir / "config.json").write_text(json.dumps(config, indent=1))
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["split", "model", "name", "value"])
        for k, v in metrics.items():
            w.writerow(["test", "ours", k, f"{v:.6g}"])
        for k, v in baselines.items():
            w.writerow(["test", "baseline", k, f"{v:.6g}"])


def load_run(run_dir: str | Path) -> tuple[Task, TaskConfig, dict[str, Any], nn.Module]:
    """``(task, config, meta, model with its trained weights)`` from a run directory."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json); make one with `rnnkit train TASK`")
    saved = json.loads(path.read_text())
    task = get_task(saved["task"])
    cfg = TaskConfig(**saved["config"])
    model = task.build(cfg, saved["meta"])
    model.load_state_dict(load_file(str(run_dir / "weights.safetensors")))  # safetensors: no pickle
    return task, cfg, saved["meta"], model.eval()
