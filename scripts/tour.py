"""The tour (`make demo`): train every task briefly on its bundled real data, print one table
(task, topology, cell, metric, baseline, ours) and write a Markdown report with the plots.

    python scripts/tour.py [--out runs/tour] [--tasks forecast sentiment ...] [--quick] [--jobs N]

Each task runs its `quick` recipe (rnnkit.tasks.recipes: lighter than the defaults, a few minutes in all
on 2 CPU cores); ``--quick`` uses the test suite's even smaller settings. A task whose data is
not installed is listed with the command that installs it.

The tasks run in ``--jobs`` worker processes (default: one per core), each with an equal share of
the cores as torch threads, longest first. These models are small: a step is mostly per-op
overhead, which a second thread hardly shortens, so two one-thread tasks side by side finish
sooner than the same two one after another on two threads each (measured on 2 cores: about 10
minutes one after another, 6 minutes two at a time).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from rnnkit.data.bundled import DataUnavailable
from rnnkit.tasks import all_tasks, get_task
from rnnkit.tasks.recipes import RECIPES
from rnnkit.tasks.runner import train_task
from rnnkit.tasks_cli import quiet

QUICK = {
    "forecast": dict(epochs=15), "sentiment": dict(max_train=6000, epochs=2), "tagging": dict(epochs=8),
    "g2p": dict(max_train=5000, epochs=4), "music": dict(epochs=20), "chars": dict(max_train=3000, epochs=5),
    "speech": dict(epochs=20), "caption": dict(max_train=3000, epochs=6),
    "image": dict(max_train=20000, epochs=3),
    "translate": dict(max_train=6000, epochs=2, hidden=128, embedding=64, batch_size=32, lr=3e-3),
    "video": dict(max_train=2000, epochs=3),
    "frames": dict(max_train=600, epochs=2, hidden=32),
    "summarize": dict(max_train=8000, epochs=2, hidden=128, embedding=64, lr=3e-3),
}


#: seconds each task took in the tour (two at a time on 2 cores, one thread each; measured), to start
#: the longest ones first
EXPECTED_S = {"summarize": 169, "sentiment": 150, "translate": 123, "frames": 61, "image": 42, "tagging": 26,
              "video": 20, "speech": 18, "chars": 15, "g2p": 13, "caption": 10, "music": 8, "forecast": 2}


@dataclass
class Outcome:
    """What a worker sends back about one task (a trained model stays in its run directory)."""

    name: str
    seconds: float
    skipped: str = ""
    metrics: dict[str, float] | None = None
    baselines: dict[str, float] | None = None
    pictures: tuple[str, ...] = ()
    train_size: int = 0


def fmt(v: float) -> str:
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"


def run_one(name: str, overrides: dict, out: Path, threads: int, verbose: bool) -> Outcome:
    """Train one task (in a worker process) and say how it went."""
    torch.set_num_threads(threads)
    quiet(verbose)
    task = get_task(name)
    cfg = task.config(progress=False, **overrides)
    t0 = time.time()
    try:
        r = train_task(task, cfg, out, overwrite=True)  # the tour replaces its previous runs
    except DataUnavailable as err:
        return Outcome(name, time.time() - t0, skipped=str(err))
    return Outcome(name, time.time() - t0, metrics=r.metrics, baselines=r.baselines,
                   pictures=tuple(p.name for p in sorted(r.run_dir.glob("*.png"))), train_size=len(r.data.train))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/tour", help="where the runs and report.md go")
    parser.add_argument("--tasks", nargs="+", default=None, help="a subset of the tasks (default: all)")
    parser.add_argument("--quick", action="store_true", help="the test suite's smaller settings")
    parser.add_argument("--verbose", action="store_true", help="show Lightning's banners and third-party warnings")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="tasks trained at once, in worker processes (default: one per core)")
    args = parser.parse_args(argv)
    quiet(args.verbose)
    names = args.tasks or [t.name for t in all_tasks()]
    settings = QUICK if args.quick else RECIPES["quick"]
    out = Path(args.out)
    console = Console(width=None if sys.stdout.isatty() else 160)
    jobs = max(1, min(args.jobs, len(names)))
    threads = max(1, torch.get_num_threads() // jobs)
    console.print(f"{len(names)} tasks, {jobs} at a time, {threads} torch thread(s) each")
    start = time.time()
    outcomes: dict[str, Outcome] = {}
    order = sorted(names, key=lambda n: -EXPECTED_S.get(n, 60))  # longest first: the last to finish is short
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_one, n, settings.get(n, {}), out, threads, args.verbose): n for n in order}
        for future in as_completed(futures):
            o = outcomes[futures[future]] = future.result()
            task = get_task(o.name)
            if o.skipped:
                console.print(f"[bold]{o.name}[/bold]: skipped: {o.skipped}")
                continue
            ours, base = o.metrics[task.metric], o.baselines[task.baseline]
            console.print(f"[bold]{o.name}[/bold]: {task.title} ({task.dataset.name}): {task.metric} {fmt(ours)} vs "
                          f"{task.baseline} {fmt(base)} ({o.seconds:.0f} s)")
    rows, sections = [], []
    for name in names:  # the report in the tasks' own order
        o, task = outcomes[name], get_task(name)
        cfg = task.config(progress=False, **settings.get(name, {}))
        if o.skipped:
            rows.append((name, task.topology, cfg.cell, task.metric, "-", f"skipped: {o.skipped}", ""))
            continue
        ours, base = o.metrics[task.metric], o.baselines[task.baseline]
        verdict = "yes" if task.beats(ours, base) else "NO"
        rows.append((name, task.topology, cfg.cell, f"{task.metric} ({'higher' if task.higher_is_better else 'lower'}"
                     " is better)", f"{task.baseline} {fmt(base)}", fmt(ours), verdict))
        d = task.dataset
        sections.append("\n".join([
            f"## {name}: {task.title}", "",
            f"*{task.topology}*, cell `{cfg.cell}`, hidden {cfg.hidden}, layers {cfg.layers}, "
            f"bidirectional {cfg.bidirectional}, {cfg.epochs} epochs, {o.train_size} training examples, "
            f"{o.seconds:.0f} s.", "",
            f"Data: {d.source}; {d.size}; licence: {d.licence}; split: {d.split}.", "",
            "| | " + " | ".join(o.metrics) + " |", "|---|" + "---|" * len(o.metrics),
            "| ours | " + " | ".join(fmt(v) for v in o.metrics.values()) + " |", "",
            "Baselines (same held-out split): " + ", ".join(f"{k} {fmt(v)}" for k, v in o.baselines.items()) + ".",
            "", *[f"![{p}]({name}/{p})" for p in o.pictures], "",
        ]))
    table = Table("task", "topology", "cell", "metric", "baseline", "ours", "beats", title="rnnkit tour")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    report = out / "report.md"
    header = ["# rnnkit tour", "", f"Every task trained briefly on its bundled real data ({time.time() - start:.0f} s "
              f"in all, {jobs} at a time). Metrics on held-out data; baselines on the same split.", "",
              "| task | topology | cell | metric | baseline | ours | beats |", "|---|---|---|---|---|---|---|",
              *["| " + " | ".join(r) + " |" for r in rows], ""]
    out.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(header + sections))
    console.print(f"report: {report} ({time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
