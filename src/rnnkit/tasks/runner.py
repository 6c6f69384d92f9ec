"""Train, evaluate, resume and reload any task; the run directory.

Training goes through :mod:`rnnkit.train` (Lightning, progress bar, CSV log, gradient clipping):
:class:`TaskModule` is a :class:`~rnnkit.train.TrainModule` whose loss is the task's. A run
directory holds::

    status.json          running | interrupted | failed | finished, with the time and the command
    run.json             what was asked for (task, TaskConfig, checkpoint interval): what resume reads
    checkpoints/last.ckpt/  the latest checkpoint (every epoch end, every N minutes, on SIGINT/SIGTERM)
    config.json          task, TaskConfig, meta (vocabularies, scaling), dataset, metrics, baselines,
                         and the sha256 of the weights; written last
    weights.safetensors  the model's state_dict
    metrics.csv          split, name, value: the task metric(s) and baselines on held-out data
    best.ckpt/           the best validation epoch's checkpoint (``keep_best``; safetensors + JSON)
    history.csv          Lightning's per-step/epoch log (train_loss, val_loss)
    learning_curve.png   train and validation loss
    <picture>.png        the task's picture (forecast, confusion matrix, attention map, ...)

Every file is written under a temporary name and renamed into place. A new run never writes into
an old run's directory: it takes the next free numbered name (``forecast-2``) unless told to
overwrite. :func:`load_run` checks the weights against the recorded sha256 and the model's
shapes, and raises :class:`RunError` (one line naming the file and the problem) otherwise.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import Tensor, nn
from torch.utils.data import DataLoader

from rnnkit._files import write_bytes_atomic
from rnnkit.tasks.base import Prepared, Task, TaskConfig, get_task
from rnnkit.tasks.plots import plot_learning_curve
from rnnkit.train import OptimConfig, ResumableLoader, TrainConfig, TrainModule, fit, load_weights
from rnnkit.train.averaging import EpochAverage
from rnnkit.train.checkpoint import check_state_dict, read_checkpoint
from rnnkit.train.interrupt import RunCheckpoint, RunInterrupted

__all__ = ["RunError", "RunResult", "TaskModule", "load_run", "loaders", "read_status", "resume_task", "train_task"]

STATUS, REQUEST, CONFIG, WEIGHTS = "status.json", "run.json", "config.json", "weights.safetensors"
LAST = Path("checkpoints") / "last.ckpt"
RUN_DIR_ENV = "RNNKIT_RUN_DIR"  # rank 0's choice of run directory, read by DDP worker processes


class RunError(ValueError):
    """A run directory that cannot be used as it is; the message names the file and the problem."""


# -- atomic files ---------------------------------------------------------------------------------
def _write_json(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=1) + "\n").encode())


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RunError(f"{path}: missing")
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"{path}: not readable JSON ({e})") from e
    if not isinstance(obj, dict):
        raise RunError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def write_status(run_dir: Path, status: str, **extra: Any) -> None:
    _write_json(run_dir / STATUS, {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                   "pid": os.getpid(), **extra})


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``status.json`` (``{"status": "none"}`` for a directory without one)."""
    path = Path(run_dir) / STATUS
    return _read_json(path) if path.exists() else {"status": "none"}


def _free_run_dir(out_dir: Path, name: str, overwrite: bool) -> Path:
    """``out_dir/name`` if it is free (absent or empty) or ``overwrite``; else ``name-2``, ``name-3``..."""
    first = out_dir / name
    if overwrite and first.exists():
        shutil.rmtree(first)
    k, path = 1, first
    while path.exists() and any(path.iterdir()):
        k += 1
        path = out_dir / f"{name}-{k}"
    return path


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

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        state = self.task.training_state()  # e.g. the streams' carried state: a resumed run continues them
        if state is not None:
            checkpoint["rnnkit"]["task_state"] = state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.task.restore_training_state(checkpoint.get("rnnkit", {}).get("task_state"))

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
    """The training loader (the task's batches, by default length-bucketed; resumable mid-epoch) and the
    validation loader."""
    collate = partial(task.collate, meta=data.meta)
    sampler = task.batch_sampler(data.train, cfg.batch_size, train=True, seed=cfg.seed)
    train = ResumableLoader(data.train, batch_sampler=sampler, collate_fn=collate, seed=cfg.seed)
    val_sampler = task.batch_sampler(data.val, cfg.batch_size * 2, train=False, seed=cfg.seed)
    return train, DataLoader(data.val, batch_sampler=val_sampler, collate_fn=collate)


def _command() -> list[str]:
    return ["rnnkit", *sys.argv[1:]] if Path(sys.argv[0]).name == "rnnkit" else list(sys.argv)


def train_task(task: Task | str, cfg: TaskConfig | None = None, out_dir: str | Path = "runs",
               run_name: str | None = None, *, overwrite: bool = False, checkpoint_minutes: float = 0.0,
               echo: Any = None) -> RunResult:
    """Prepare the data, train, evaluate against the baselines and write the run directory.

    The directory is ``out_dir/run_name`` (default: the task's name), or the next free numbered
    name when that one holds an earlier run, unless ``overwrite``. A checkpoint is written at
    every epoch end, every ``checkpoint_minutes`` (0: off) and on SIGINT/SIGTERM, which raise
    :class:`~rnnkit.train.interrupt.RunInterrupted` after it; :func:`resume_task` continues.
    ``echo(message)`` receives notes (the directory taken, data caps); default: stderr."""
    task = get_task(task) if isinstance(task, str) else task
    cfg = cfg or task.config()
    echo = echo or (lambda m: print(m, file=sys.stderr))
    chosen = os.environ.get(RUN_DIR_ENV)  # a DDP worker: rank 0 has chosen and claimed it
    if chosen:
        run_dir = Path(chosen)
    else:
        wanted = Path(out_dir) / (run_name or task.name)
        run_dir = _free_run_dir(Path(out_dir), run_name or task.name, overwrite)
        if run_dir != wanted:
            echo(f"note: {wanted} holds an earlier run ({read_status(wanted)['status']}); "
                 f"writing {run_dir} (--overwrite replaces it)")
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(run_dir / REQUEST, {"task": task.name, "config": cfg.to_dict(),
                                        "checkpoint_minutes": checkpoint_minutes, "command": _command()})
    return _train_in(run_dir, task, cfg, checkpoint_minutes, None)


def resume_task(run_dir: str | Path) -> RunResult:
    """Continue an interrupted or killed run from its last complete checkpoint, to the weights an
    uninterrupted run reaches (same seed, data order, optimizer and scheduler state)."""
    run_dir = Path(run_dir)
    request = _read_json(run_dir / REQUEST)
    status = read_status(run_dir)["status"]
    if status == "finished":
        raise RunError(f"{run_dir / STATUS}: the run has finished; there is nothing to resume")
    last = run_dir / LAST
    if not last.exists():
        raise RunError(f"{last}: no checkpoint yet (the run stopped before its first one); train it again")
    try:
        read_checkpoint(last)  # every checksum, before Lightning touches it
    except (ValueError, FileNotFoundError) as e:
        raise RunError(str(e)) from e
    task = get_task(request["task"])
    try:
        cfg = TaskConfig(**request["config"])
    except TypeError as e:
        raise RunError(f"{run_dir / REQUEST}: not a TaskConfig ({e})") from e
    return _train_in(run_dir, task, cfg, float(request.get("checkpoint_minutes", 0.0)), last)


def _train_in(run_dir: Path, task: Task, cfg: TaskConfig, checkpoint_minutes: float,
              resume: Path | None) -> RunResult:
    torch.manual_seed(cfg.seed)
    data = task.prepare(cfg)
    if cfg.data:  # the pictures are titled by the user's file, not the bundled data set
        data.meta["data_name"] = Path(cfg.data).name
    model = task.build(cfg, data.meta)
    os.environ[RUN_DIR_ENV] = str(run_dir)  # DDP workers re-run the command: they must find this directory
    keep_best = cfg.keep_best and len(data.val) > 0  # nothing to select on without a validation split
    module = TaskModule(model, task, optim=OptimConfig(lr=cfg.lr, schedule=cfg.schedule), clip_val=cfg.clip or None,
                        model_config={"task": task.name, **cfg.to_dict()},
                        val_data=data if keep_best and task.select_on_metric else None)
    train, val = loaders(task, data, cfg)
    best = best_checkpoint(task, run_dir) if keep_best else None
    if best is not None and resume is None:  # a previous run's best is not this run's (every DDP rank tries)
        shutil.rmtree(run_dir / "best.ckpt", ignore_errors=True)
    saver = RunCheckpoint(run_dir / LAST, every_minutes=checkpoint_minutes)
    tcfg = TrainConfig(
        max_epochs=cfg.epochs, accelerator=cfg.accelerator, devices=cfg.devices,
        strategy="ddp" if cfg.devices > 1 else "auto", seed=cfg.seed, out_dir=str(run_dir.parent),
        name=run_dir.name, loggers=("csv",), progress=cfg.progress, log_every_n_steps=5,
        checkpoint_every_n_steps=0, grad_monitor_every=None, resume=None if resume is None else str(resume),
    )
    command = f"rnnkit resume {run_dir}"
    write_status(run_dir, "running", resume=command)
    try:
        averager = [EpochAverage(cfg.average)] if cfg.average else []  # before the saver: see EpochAverage
        trainer = fit(module, train, val, tcfg, callbacks=averager + [saver] + ([best] if best else []),
                      enable_model_summary=False, use_distributed_sampler=False,
                      enable_checkpointing=best is not None)  # see loaders; RunCheckpoint saves by itself
    except RunInterrupted as stop:
        write_status(run_dir, "interrupted", resume=command, epoch=stop.epoch, step=stop.step)
        raise
    except BaseException as err:
        write_status(run_dir, "failed", resume=command, error=f"{type(err).__name__}: {err}"[:500])
        raise
    finally:
        os.environ.pop(RUN_DIR_ENV, None)
    model = module.model.cpu().eval()
    if trainer.global_rank != 0:  # DDP: rank 0 evaluates and writes the run directory
        return RunResult(task.name, run_dir, {}, {}, model, data)
    if best is not None and best.best_model_path:
        load_weights(model, best.best_model_path)  # checks every name and shape against the model
    task.finalize(model, data)
    metrics = {**task.evaluate(model, data.test, data.meta), **task.test_extras(model, data)}
    baselines = task.baselines(data)
    save_run(run_dir, task, cfg, data.meta, model, metrics, baselines)
    logs = sorted(run_dir.glob("csv/version_*/metrics.csv"))
    if logs:
        _join_logs(logs, run_dir / "history.csv")
        plot_learning_curve(run_dir / "history.csv", run_dir / "learning_curve.png",
                            title=task.picture_title(data.meta))
    task.picture(model, data, run_dir / task.picture_name)
    write_status(run_dir, "finished")
    return RunResult(task.name, run_dir, metrics, baselines, model, data)


def _join_logs(logs: list[Path], out: Path) -> None:
    """One history from Lightning's per-attempt CSV logs (a resumed run writes a new version)."""
    if len(logs) == 1:
        write_bytes_atomic(out, logs[0].read_bytes())
        return
    logs = sorted(logs, key=lambda p: int(p.parent.name.split("_")[-1]))
    rows, header = [], []
    for log in logs:
        with open(log, newline="") as f:
            reader = csv.DictReader(f)
            header += [h for h in reader.fieldnames or [] if h not in header]
            rows += list(reader)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header)
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomic(out, buf.getvalue().encode())


def save_run(run_dir: Path, task: Task, cfg: TaskConfig, meta: dict[str, Any], model: nn.Module,
             metrics: dict[str, float], baselines: dict[str, float]) -> None:
    """Weights, metrics and then the config (with the weights' sha256), each written atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    blob = save(state)
    write_bytes_atomic(run_dir / WEIGHTS, blob)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["split", "model", "name", "value"])
    for k, v in metrics.items():
        w.writerow(["test", "ours", k, f"{v:.6g}"])
    for k, v in baselines.items():
        w.writerow(["test", "baseline", k, f"{v:.6g}"])
    write_bytes_atomic(run_dir / "metrics.csv", buf.getvalue().encode())
    config = {"task": task.name, "config": cfg.to_dict(), "meta": meta, "dataset": task.dataset.to_dict(),
              "metric": task.metric, "metrics": metrics, "baselines": baselines,
              "weights": {"file": WEIGHTS, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}}
    _write_json(run_dir / CONFIG, config)


def load_run(run_dir: str | Path) -> tuple[Task, TaskConfig, dict[str, Any], nn.Module]:
    """``(task, config, meta, model with its trained weights)`` from a run directory, after checking
    the weights' sha256 and their names and shapes against the model the config describes."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG
    if not path.is_file():
        status = read_status(run_dir)["status"] if run_dir.is_dir() else "none"
        hint = (f"it is {status}; `rnnkit resume {run_dir}` continues it" if status in ("running", "interrupted",
                                                                                          "failed")
                else "make one with `rnnkit train TASK`")
        raise RunError(f"{run_dir} is not a finished run directory (no {CONFIG}); {hint}")
    saved = _read_json(path)
    if isinstance(saved.get("config"), dict) and "weights" not in saved:
        raise RunError(f"{path}: no checksum of the weights is recorded (a run written by an older rnnkit); "
                       "train it again to use it")
    try:
        task = get_task(saved["task"])
        cfg = TaskConfig(**saved["config"])
        meta = saved["meta"]
        recorded = saved["weights"]["sha256"]
    except (KeyError, TypeError, ValueError) as e:
        raise RunError(f"{path}: not an rnnkit run config ({type(e).__name__}: {e})") from e
    weights = run_dir / WEIGHTS
    if not weights.is_file():
        raise RunError(f"{weights}: missing")
    blob = weights.read_bytes()
    actual = hashlib.sha256(blob).hexdigest()
    if actual != recorded:
        raise RunError(f"{weights}: sha256 {actual[:12]}... does not match {recorded[:12]}... recorded in {path} "
                       f"({len(blob)} bytes, {saved['weights'].get('bytes', '?')} written); the file is damaged "
                       "or was replaced")
    try:
        state = load(blob)  # safetensors: no pickle
    except (SafetensorError, RuntimeError, ValueError) as e:
        raise RunError(f"{weights}: not a safetensors file ({e})") from e
    try:
        model = task.build(cfg, meta)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise RunError(f"{path}: its config does not build a {task.name} model ({type(e).__name__}: {e})") from e
    try:
        check_state_dict(model.state_dict(), state, weights)
    except ValueError as e:
        raise RunError(f"{e} (does {path} describe these weights?)") from e
    model.load_state_dict(state)
    return task, cfg, meta, model.eval()
