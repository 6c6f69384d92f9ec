"""The tour (`make demo`): train every task briefly on its bundled real data, print one table
(task, topology, cell, metric, baseline, ours) and write a Markdown report with the plots.

    python scripts/tour.py [--out runs/tour] [--tasks forecast sentiment ...] [--quick]

Each task runs with its defaults except for the lighter settings in TOUR (a few minutes in all
on 2 CPU cores); ``--quick`` uses the test suite's even smaller settings. A task whose data is
not installed is listed with the command that installs it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rnnkit.data.bundled import DataUnavailable
from rnnkit.tasks import all_tasks, get_task
from rnnkit.tasks.runner import train_task
from rnnkit.tasks_cli import quiet

TOUR = {  # lighter than each task's defaults, so the whole tour takes minutes
    "g2p": dict(max_train=10000, epochs=5),
    "chars": dict(max_train=3000, epochs=5),
    "image": dict(max_train=20000, epochs=3),
    "translate": dict(max_train=6000, epochs=2, hidden=128, embedding=64, batch_size=32, lr=3e-3),
    "video": dict(max_train=2000, epochs=3),
    "frames": dict(max_train=600, epochs=2, hidden=32),
    "summarize": dict(max_train=8000, epochs=2, hidden=128, embedding=64, lr=3e-3),
}
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


def fmt(v: float) -> str:
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/tour", help="where the runs and report.md go")
    parser.add_argument("--tasks", nargs="+", default=None, help="a subset of the tasks (default: all)")
    parser.add_argument("--quick", action="store_true", help="the test suite's smaller settings")
    parser.add_argument("--verbose", action="store_true", help="show Lightning's banners and third-party warnings")
    args = parser.parse_args(argv)
    quiet(args.verbose)
    names = args.tasks or [t.name for t in all_tasks()]
    out = Path(args.out)
    console = Console(width=None if sys.stdout.isatty() else 160)
    rows, sections = [], []
    start = time.time()
    for name in names:
        task = get_task(name)
        cfg = task.config(progress=False, **(QUICK if args.quick else TOUR).get(name, {}))
        console.print(f"[bold]{name}[/bold]: {task.title} ({task.dataset.name}) ...")
        t0 = time.time()
        try:
            r = train_task(task, cfg, out, overwrite=True)  # the tour replaces its previous runs
        except DataUnavailable as err:
            rows.append((name, task.topology, cfg.cell, task.metric, "-", f"skipped: {err}", ""))
            console.print(f"  skipped: {err}")
            continue
        ours, base = r.metrics[task.metric], r.baselines[task.baseline]
        others = ", ".join(f"{k} {fmt(v)}" for k, v in r.baselines.items() if k != task.baseline and k != "period")
        verdict = "yes" if task.beats(ours, base) else "NO"
        rows.append((name, task.topology, cfg.cell, f"{task.metric} ({'higher' if task.higher_is_better else 'lower'}"
                     " is better)", f"{task.baseline} {fmt(base)}", fmt(ours), verdict))
        console.print(f"  {task.metric} {fmt(ours)} vs {task.baseline} {fmt(base)} ({time.time() - t0:.0f} s)")
        pics = [p.name for p in sorted(r.run_dir.glob("*.png"))]
        d = task.dataset
        sections.append("\n".join([
            f"## {name}: {task.title}", "",
            f"*{task.topology}*, cell `{cfg.cell}`, hidden {cfg.hidden}, layers {cfg.layers}, "
            f"bidirectional {cfg.bidirectional}, {cfg.epochs} epochs, {len(r.data.train)} training examples.", "",
            f"Data: {d.source}; {d.size}; licence: {d.licence}; split: {d.split}.", "",
            "| | " + " | ".join(r.metrics) + " |", "|---|" + "---|" * len(r.metrics),
            "| ours | " + " | ".join(fmt(v) for v in r.metrics.values()) + " |", "",
            "Baselines (same held-out split): " + ", ".join(f"{k} {fmt(v)}" for k, v in r.baselines.items()) + ".",
            "", *[f"![{p}]({name}/{p})" for p in pics], "",
        ]))
        if others:
            console.print(f"  other baselines: {others}")
    table = Table("task", "topology", "cell", "metric", "baseline", "ours", "beats", title="rnnkit tour")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    report = out / "report.md"
    header = ["# rnnkit tour", "", f"Every task trained briefly on its bundled real data ({time.time() - start:.0f} s "
              "in all). Metrics on held-out data; baselines on the same split.", "",
              "| task | topology | cell | metric | baseline | ours | beats |", "|---|---|---|---|---|---|---|",
              *["| " + " | ".join(r) + " |" for r in rows], ""]
    out.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(header + sections))
    console.print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
