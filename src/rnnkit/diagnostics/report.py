"""``rnnkit diagnose``: train every cell on the adding problem at several lengths and report
what the gradient does.

For each (cell, T) the run measures, on a fixed probe batch, ``||dL/dh_t||`` against the distance
``T-1-t`` from the loss and the recurrent Jacobian's spectral norm along the sequence, both at
initialisation and after training; trains with Adam, gradient clipping (Pascanu et al. 2013) and
the non-finite guard in skip mode; and scores the MSE on held-out sequences against the 0.167 of
always answering 1. ``report.md`` holds the table and the PNGs; ``results.json`` the numbers.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from rnnkit.cells import cell_names
from rnnkit.diagnostics.adding import AddingBatches, AddingModel, adding_baseline_mse, adding_batch
from rnnkit.diagnostics.gradflow import timestep_grad_norms
from rnnkit.diagnostics.jacobian import trajectory_jacobian_norms
from rnnkit.diagnostics.plots import plot_distance_curves, plot_jacobian, plot_layer_norms, plot_loss_curves
from rnnkit.init import gate_layouts, initialise_
from rnnkit.train import GradientFlowMonitor, OptimConfig, TrainConfig, TrainModule, fit

__all__ = ["DiagnoseConfig", "RunResult", "run_diagnose", "write_report"]


@dataclass
class DiagnoseConfig:
    cells: tuple[str, ...] = ()             # cell names; empty: every registered cell
    lengths: tuple[int, ...] = (50, 200, 1000)  # sequence lengths T
    steps: int = 1500                       # optimizer steps per run at most
    hidden: int = 64                        # hidden units
    batch: int = 64                         # sequences per step
    lr: float = 1e-2                        # Adam learning rate
    clip: float = 1.0                       # gradient clipping by global norm
    init: str = "auto"                      # auto: chrono (T) for gated cells, torch's default for the rest;
                                            # or a scheme for every cell ("default", "orthogonal+forget_bias", ...)
    solved_mse: float = 0.01                # the bar for "solved"
    stop_below: float = 0.001               # end a run once its validation MSE is below this (0: never)
    eval_every: int = 100                   # validate every n steps
    eval_size: int = 1000                   # held-out sequences
    probe_size: int = 128                   # sequences for the gradient and Jacobian measurements
    jacobian_points: int = 25               # Jacobian estimates along the sequence
    max_minutes: float = 0.0                # wall-clock cap per run (0: none)
    threads: int = 0                        # torch CPU threads (0: torch's default; 1 on a busy machine)
    seed: int = 0
    out: str = "runs/diagnose"              # report.md, PNGs, results.json and the runs' logs
    progress: bool = True                   # rich progress bars


@dataclass
class RunResult:
    cell: str
    steps: int  # the sequence length T
    init: str
    trained_steps: int
    seconds: float
    mse: float
    solved: bool
    grad_init: list[float] = field(default_factory=list)  # ||dL/dh|| by distance 0 .. T-1
    grad_trained: list[float] = field(default_factory=list)
    jac_at: list[int] = field(default_factory=list)  # time steps of the Jacobian estimates
    jac_init: list[float] = field(default_factory=list)
    jac_trained: list[float] = field(default_factory=list)
    val_history: list[tuple[int, float]] = field(default_factory=list)
    layer_norms: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    skipped_steps: int = 0

    def reach(self, curve: list[float]) -> float:
        """``||dL/dh_0|| / ||dL/dh_{T-1}||``: what is left of the gradient at the first step."""
        return curve[-1] / curve[0] if curve and curve[0] > 0 else float("nan")


class _ValHistory(L.Callback):
    def __init__(self) -> None:
        self.points: list[tuple[int, float]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get("val_loss")
        if value is not None:
            self.points.append((trainer.global_step, float(value)))


def _auto_init(model: AddingModel, cfg: DiagnoseConfig, steps: int) -> str:
    if cfg.init != "auto":
        initialise_(model, cfg.init, max_len=steps)
        return cfg.init
    if any(set(layout) & {"f", "z"} for layout in gate_layouts(model)):
        initialise_(model, "chrono", max_len=steps)
        return "chrono"
    return "default"


def _measure(model: AddingModel, x: torch.Tensor, y: torch.Tensor, cfg: DiagnoseConfig) -> tuple:
    model.eval()
    probe = timestep_grad_norms(model, lambda: (model(x)[0] - y).pow(2).mean())["rnn"]
    by_distance = probe.norms()[0].flip(0).tolist()  # distance 0 = the last step
    stride = max(1, x.size(1) // cfg.jacobian_points)
    jac = trajectory_jacobian_norms(model.rnn, x[:32], iters=10, stride=stride)[0].tolist()
    model.train()
    return by_distance, list(range(0, x.size(1), stride)), jac


@torch.no_grad()
def _mse(model: AddingModel, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    err = sum(float((model(xb)[0] - yb).pow(2).sum()) for xb, yb in zip(x.split(500), y.split(500), strict=True))
    model.train()
    return err / len(y)


def run_one(cell: str, steps: int, cfg: DiagnoseConfig) -> RunResult:
    """Train and measure one cell at one length."""
    L.seed_everything(cfg.seed, verbose=False)
    model = AddingModel(cell, cfg.hidden)
    init = _auto_init(model, cfg, steps)
    eval_x, eval_y = adding_batch(cfg.eval_size, steps, generator=torch.Generator().manual_seed(cfg.seed + 7919))
    px, py = eval_x[: cfg.probe_size], eval_y[: cfg.probe_size]
    grad_init, jac_at, jac_init = _measure(model, px, py, cfg)

    module = TrainModule(model, "mse", optim=OptimConfig(lr=cfg.lr), clip_val=cfg.clip,
                         model_config={"cell": cell, "hidden": cfg.hidden, "task": "adding", "T": steps})
    history, monitor = _ValHistory(), GradientFlowMonitor(10, plot=False)
    train = DataLoader(AddingBatches(cfg.steps, cfg.batch, steps, cfg.seed), batch_size=None)
    val = DataLoader(TensorDataset(eval_x, eval_y), batch_size=500)
    tcfg = TrainConfig(
        max_steps=cfg.steps, out_dir=str(Path(cfg.out) / "runs"), name=f"{cell}_T{steps}", loggers=("csv",),
        progress=cfg.progress, val_every_n_steps=min(cfg.eval_every, cfg.steps),
        early_stop_below=cfg.stop_below or None, checkpoint_every_n_steps=0, grad_monitor_every=None,
        nonfinite="skip", seed=cfg.seed,
    )
    extra: dict[str, Any] = {"num_sanity_val_steps": 0}
    if cfg.max_minutes > 0:
        extra["max_time"] = {"seconds": int(cfg.max_minutes * 60)}
    start = time.perf_counter()
    trainer = fit(module, train, val, tcfg, callbacks=[history, monitor], **extra)
    seconds = time.perf_counter() - start
    guard = next((c for c in trainer.callbacks if type(c).__name__ == "NonFiniteGuard"), None)

    mse = _mse(model, eval_x, eval_y)
    grad_trained, _, jac_trained = _measure(model, px, py, cfg)
    return RunResult(
        cell=cell, steps=steps, init=init, trained_steps=trainer.global_step, seconds=seconds, mse=mse,
        solved=math.isfinite(mse) and mse < cfg.solved_mse, grad_init=grad_init, grad_trained=grad_trained,
        jac_at=jac_at, jac_init=jac_init, jac_trained=jac_trained, val_history=history.points,
        layer_norms=monitor.layer_norms, skipped_steps=len(guard.skipped) if guard is not None else 0,
    )


def run_diagnose(cfg: DiagnoseConfig, *, echo: Any = print) -> list[RunResult]:
    """Every (length, cell) run, then the report. ``echo`` prints one line per finished run."""
    cells = list(cfg.cells) or cell_names()
    unknown = sorted(set(cells) - set(cell_names()))
    if unknown:
        raise ValueError(f"unknown cell(s) {unknown}; known cells: {', '.join(cell_names())}")
    if any(t < 2 for t in cfg.lengths):
        raise ValueError(f"lengths must be >= 2, got {list(cfg.lengths)}")
    threads = torch.get_num_threads()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    results = []
    try:
        for steps in cfg.lengths:
            for cell in cells:
                r = run_one(cell, steps, cfg)
                results.append(r)
                verdict = "solved" if r.solved else "not solved"
                echo(f"{cell:>10} T={steps:<5} MSE {r.mse:.4g} ({verdict}) after {r.trained_steps} steps, "
                     f"{r.seconds:.0f} s; gradient left at t=0: {r.reach(r.grad_trained):.2e}")
                write_report(results, cfg)  # after every run: a long sweep leaves a usable report
    finally:  # a caller in the same process (a notebook, a test) keeps its own thread count
        torch.set_num_threads(threads)
    return results


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return "n/a"
    return "0 (underflow)" if v == 0 else f"{v:.2e}"


def table_rows(results: list[RunResult]) -> list[list[str]]:
    rows = []
    for r in results:
        jac = [v for v in r.jac_trained if math.isfinite(v)]
        rows.append([
            r.cell, str(r.steps), r.init, str(r.trained_steps), f"{r.seconds:.0f}", f"{r.mse:.4f}",
            "yes" if r.solved else "no", _fmt(r.reach(r.grad_init)), _fmt(r.reach(r.grad_trained)),
            f"{sum(jac) / len(jac):.3f}" if jac else "n/a",
        ])
    return rows


HEADER = ["cell", "T", "init", "steps", "time (s)", "test MSE", "solved", "‖dL/dh_0‖/‖dL/dh_T-1‖ init",
          "… trained", "mean ‖J_t‖ trained"]


def write_report(results: list[RunResult], cfg: DiagnoseConfig) -> Path:
    """``report.md``, one set of PNGs per length, and ``results.json`` under ``cfg.out``."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    baseline = adding_baseline_mse()
    lines = [
        "# rnnkit diagnose: the adding problem", "",
        "Each input step is (value ~ U(0,1), marker); two markers, one in each half of the sequence; the target is",
        "the sum of the two marked values, read after the last step (Hochreiter & Schmidhuber 1997). Always",
        f"answering 1 scores MSE {baseline:.3f}; **solved** means test MSE < {cfg.solved_mse}.", "",
        f"Settings: hidden {cfg.hidden}, batch {cfg.batch}, Adam lr {cfg.lr}, clip-by-norm {cfg.clip}, at most "
        f"{cfg.steps} steps (stopping once validation MSE < {cfg.stop_below}), {cfg.eval_size} test sequences, "
        f"seed {cfg.seed}.", "",
        "Gradient reach: `‖dL/dh_0‖ / ‖dL/dh_T-1‖` for the loss after the last step (Pascanu et al. 2013): how much",
        "of the gradient survives the trip back to the first step. Near 0 is the vanishing gradient.", "",
        "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    for steps in sorted({r.steps for r in results}):
        runs = [r for r in results if r.steps == steps]
        plot_distance_curves({r.cell: r.grad_trained for r in runs}, out / f"gradflow_T{steps}.png",
                             dashed={r.cell: r.grad_init for r in runs},
                             title=f"Adding problem, T={steps}: ||dL/dh_t|| by distance (solid: trained)")
        plot_loss_curves({r.cell: tuple(zip(*r.val_history, strict=True)) for r in runs if r.val_history},
                         out / f"loss_T{steps}.png", title=f"Adding problem, T={steps}",
                         hlines={"answer 1": baseline, "solved": cfg.solved_mse})
        plot_jacobian({r.cell: (r.jac_at, r.jac_trained) for r in runs}, out / f"jacobian_T{steps}.png",
                      dashed={r.cell: (r.jac_at, r.jac_init) for r in runs}, xlabel="time step t",
                      title=f"T={steps}: recurrent Jacobian spectral norm along the sequence")
        norms = _merge_layer_norms(runs)
        if norms:
            plot_layer_norms(norms, out / f"grad_norms_T{steps}.png", smooth=5,
                             title=f"T={steps}: recurrent layer's gradient norm in training (before clipping)")
        lines += ["", f"## T = {steps}", "",
                  f"![gradient by distance](gradflow_T{steps}.png)", f"![validation MSE](loss_T{steps}.png)",
                  f"![Jacobian norm](jacobian_T{steps}.png)", f"![layer gradient norms](grad_norms_T{steps}.png)"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"config": asdict(cfg), "results": [asdict(r) for r in results]}))
    return out / "report.md"


def _merge_layer_norms(runs: list[RunResult]) -> list[tuple[int, dict[str, float]]]:
    """One series per cell and recurrent layer: ``"lstm rnn.cells.0"``... (the read-out left out)."""
    merged: dict[int, dict[str, float]] = {}
    for r in runs:
        for step, norms in r.layer_norms:
            for layer, v in norms.items():
                if layer.startswith("rnn."):
                    merged.setdefault(step, {})[f"{r.cell} {layer}"] = v
    return sorted(merged.items())
