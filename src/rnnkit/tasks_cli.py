"""The task subcommands of ``rnnkit``: train, evaluate, predict, export, tasks.

``add_task_commands(subparsers)`` adds them to the ``rnnkit`` parser (:mod:`rnnkit.cli`);
``python -m rnnkit.tasks_cli`` runs them on their own. Every option of :class:`TaskConfig` is a
flag of ``rnnkit train`` (``--hidden 128 --cell gru``); unset flags keep the task's defaults.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import fields
from typing import Any

__all__ = ["add_task_commands", "main"]

HELP = {
    "cell": "recurrent cell: rnn, rnn_relu, gru, lstm, mingru, minlstm, ... (any registered name)",
    "hidden": "hidden width per layer", "layers": "stacked recurrent layers",
    "bidirectional": "bidirectional encoder/tagger/classifier (--no-bidirectional to turn off)",
    "embedding": "token embedding width", "epochs": "passes over the training split", "batch_size": "batch size",
    "lr": "Adam learning rate", "clip": "gradient-norm clipping threshold (0: off)",
    "ensemble": "classifiers trained side by side from different initialisations, probabilities averaged",
    "keep_best": "test and save the best validation epoch's weights, judged by validation loss or (sentiment, "
                 "where it is the default) validation accuracy; else the last epoch's",
    "schedule": "learning-rate schedule: constant, cosine or linear (decay over training)",
    "max_train": "cap on training examples (0: all)", "seed": "seed of the split, initialisation and order",
    "data": "your own data file instead of the bundled dataset (format: `rnnkit tasks --task NAME`)",
    "devices": "processes (DDP when > 1)", "accelerator": "cpu, gpu or auto", "progress": "progress bar",
    "missing": "forecast: a blank, NaN or inf value is an error (error) or filled linearly (interpolate)",
    "period": "forecast: seasonal period for the seasonal-naive baseline (0: detect it from the data)",
}


def _task_names() -> list[str]:
    from rnnkit.tasks import all_tasks

    return [t.name for t in all_tasks()]


def _checked(name: str, kind: type):
    """An argparse ``type`` that converts and checks one TaskConfig option when the flag is parsed."""
    from rnnkit.tasks.base import option_problem

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            kind_name = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"must be {kind_name}, got {text!r}") from None
        problem = option_problem(name, value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _add_config_flags(p: argparse.ArgumentParser, task: Any = None) -> None:
    """One flag per TaskConfig option; with ``task``, each help names that task's default."""
    from rnnkit.tasks.base import TaskConfig

    defaults = task.config().to_dict() if task is not None else {}
    for f in fields(TaskConfig):
        flag = "--" + f.name.replace("_", "-")
        text = HELP[f.name] + (f" (default for {task.name}: {defaults[f.name]!r})" if task is not None else "")
        if f.type in (bool, "bool"):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            kind = {"int": int, "float": float, "str": str}.get(str(f.type), str)
            p.add_argument(flag, dest=f.name, type=_checked(f.name, kind), default=None, metavar=f.name.upper(),
                           help=text)


def _add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", action="store_true",
                   help="show Lightning's banners and third-party warnings (default: quiet)")


def quiet(verbose: bool = False) -> None:
    """Hide Lightning's banners and tips and third-party warnings; rnnkit's own warnings stay."""
    if verbose:
        return
    import logging
    import warnings

    import lightning.pytorch  # noqa: F401  (its import sets its loggers to INFO: set them after it)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"rnnkit(\.|$)")


COMMAND_HELP = {
    "train": "train a task on its bundled data or --data PATH",
    "resume": "continue an interrupted or killed run from its last checkpoint",
    "evaluate": "score a trained run on held-out data, with its baselines",
    "predict": "run a trained model on lines of a file or stdin",
    "export": "export a trained model to ONNX and check it in onnxruntime",
    "tasks": "list the tasks with their data, metric and baseline",
}


def add_task_commands(subparsers: Any, only: str | None = "*", argv: list[str] | tuple = ()) -> None:
    """Add ``train``, ``resume``, ``evaluate``, ``predict``, ``export`` and ``tasks`` to an argparse
    subparsers object; the arguments of ``only`` ("*": all; None: none, for ``rnnkit --help``).
    ``rnnkit train TASK --help`` shows TASK's defaults and data format."""
    parsers = {}
    for name, text in COMMAND_HELP.items():
        if only in ("*", name):
            continue
        subparsers.add_parser(name, help=text, description=text)
    if only not in ("*", *COMMAND_HELP):
        return
    if only == "tasks":
        from rnnkit.catalog import read_catalog

        names = [t["task"] for t in read_catalog()]
    else:
        names = _task_names() if only in ("*", "train") else []

    def add(name: str, description: str):
        if only in ("*", name):
            parsers[name] = subparsers.add_parser(name, help=COMMAND_HELP[name], description=description)
            return parsers[name]
        return None

    words = [a for a in argv if not a.startswith("-")]
    chosen = None
    if only == "train" and len(words) > 1 and words[1] in names and ("-h" in argv or "--help" in argv):
        from rnnkit.tasks import get_task

        chosen = get_task(words[1])
    p = add("train", "Train TASK; writes a run directory (config, weights, metrics, plots, checkpoints)."
            if chosen is None else
            f"Train {chosen.name} ({chosen.title}, {chosen.topology}) on {chosen.dataset.name}, or on --data PATH: "
            f"{chosen.user_format}.")
    if p is not None:
        _build_train(p, names, chosen)
    p = add("resume", "Continue RUN from RUN/checkpoints/last.ckpt to the weights an uninterrupted run reaches.")
    if p is not None:
        p.add_argument("run", help="run directory written by `rnnkit train`")
        _add_verbose(p)
        p.set_defaults(func=_resume, _run=run)
    _build_others(add, names)


def _build_train(p: argparse.ArgumentParser, names: list[str], chosen: Any) -> None:
    p.add_argument("task", choices=names)
    _add_config_flags(p, chosen)
    p.add_argument("--out", default="runs", help="parent of the run directory (default: runs)")
    p.add_argument("--name", default=None, help="run directory name (default: the task's name)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run of the same name (default: write NAME-2, NAME-3, ...)")
    p.add_argument("--checkpoint-minutes", type=_non_negative_float, default=0.0, metavar="MINUTES",
                   help="also checkpoint every MINUTES of training (default: 0, at each epoch end only)")
    _add_verbose(p)
    p.set_defaults(func=_train, _run=run)


def _build_others(add: Any, names: list[str]) -> None:
    p = add("evaluate", COMMAND_HELP["evaluate"])
    if p is not None:
        p.add_argument("run", help="run directory written by `rnnkit train`")
        p.add_argument("--data", default=None, help="score on this file's test split instead of the run's data")
        _add_verbose(p)
        p.set_defaults(func=_evaluate, _run=run)
    p = add("predict", "Run a trained model on the lines of a file or stdin: one output line per input line "
                       "(blank lines kept). It reads the task's --data format (a table's header skipped, its "
                       "gold column scored when present) or the plain format below.")
    if p is not None:
        import textwrap

        from rnnkit.catalog import read_catalog

        p.formatter_class = argparse.RawDescriptionHelpFormatter
        p.epilog = "plain input per task:\n" + "\n".join(
            textwrap.fill(f"{t['task']}: {t['predict_format']}", 100, initial_indent="  ", subsequent_indent="    ")
            for t in read_catalog())
        p.add_argument("run", help="run directory written by `rnnkit train`")
        p.add_argument("input", nargs="?", default="-", help="input file, one example per line (default: stdin)")
        _add_verbose(p)
        p.set_defaults(func=_predict, _run=run)
    p = add("export", COMMAND_HELP["export"])
    if p is not None:
        p.add_argument("run", help="run directory written by `rnnkit train`")
        p.add_argument("--out", default=None, help="output directory (default: RUN/onnx)")
        p.add_argument("--atol", type=float, default=1e-4, help="largest allowed difference from PyTorch")
        _add_verbose(p)
        p.set_defaults(func=_export, _run=run)
    p = add("tasks", COMMAND_HELP["tasks"])
    if p is not None:
        p.add_argument("--task", choices=names, default=None, help="show one task in full, with its --data format")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=_tasks, _run=run)


def _report(task, metrics: dict[str, float], baselines: dict[str, float]) -> str:
    ours, base = metrics[task.metric], baselines[task.baseline]
    if math.isclose(ours, base, rel_tol=1e-9, abs_tol=1e-12):
        verdict = "ties with"
    else:
        verdict = "beats" if task.beats(ours, base) else "does NOT beat"
    lines = [f"{task.name}: {task.metric} = {ours:.4g} ({verdict} baseline {task.baseline} = {base:.4g})"]
    lines += [f"  ours     {k} = {v:.4g}" for k, v in metrics.items()]
    lines += [f"  baseline {k} = {v:.4g}" for k, v in baselines.items()]
    return "\n".join(lines)


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # (and not nan)
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _finish(task, result) -> int:
    if not result.metrics:  # a DDP worker other than rank 0
        return 0
    print(_report(task, result.metrics, result.baselines))
    print(f"run directory: {result.run_dir}")
    return 0


def _interrupted(stop, run_dir) -> int:
    import signal

    print(f"rnnkit: {signal.Signals(stop.signum).name} at epoch {stop.epoch}, step {stop.step}: checkpoint saved "
          f"to {stop.checkpoint}. Resume with: rnnkit resume {run_dir}", file=sys.stderr)
    return stop.exit_code


def _train(args: argparse.Namespace) -> int:
    from rnnkit.tasks import get_task
    from rnnkit.tasks.base import TaskConfig
    from rnnkit.tasks.runner import train_task
    from rnnkit.train.interrupt import RunInterrupted

    task = get_task(args.task)
    cfg = task.config(**{k: getattr(args, k) for k in TaskConfig.field_names()})
    cpus = os.cpu_count() or 1
    if cfg.accelerator == "cpu" and cfg.devices > cpus:
        print(f"warning: --devices {cfg.devices} is more processes than this machine's {cpus} CPUs; "
              "they will compete for cores", file=sys.stderr)
    try:
        result = train_task(task, cfg, args.out, args.name, overwrite=args.overwrite,
                            checkpoint_minutes=args.checkpoint_minutes)
    except RunInterrupted as stop:
        return _interrupted(stop, stop.checkpoint.parent.parent)
    return _finish(task, result)


def _resume(args: argparse.Namespace) -> int:
    from rnnkit.tasks import get_task
    from rnnkit.tasks.runner import resume_task
    from rnnkit.train.interrupt import RunInterrupted

    try:
        result = resume_task(args.run)
    except RunInterrupted as stop:
        return _interrupted(stop, args.run)
    return _finish(get_task(result.task), result)


def _evaluate(args: argparse.Namespace) -> int:
    from rnnkit.tasks.runner import load_run

    task, cfg, meta, model = load_run(args.run)
    if args.data:
        cfg.data = args.data
    data = task.prepare(cfg)
    meta = {**meta, **{k: data.meta[k] for k in task.data_keys}}
    data.meta = meta
    print(_report(task, task.evaluate(model, data.test, meta), task.baselines(data)))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from rnnkit.data.readers import decode_file
    from rnnkit.tasks.runner import load_run

    task, _, meta, model = load_run(args.run)
    if args.input == "-":
        text = sys.stdin.read()
        if text.startswith("\ufeff"):
            text = text[1:]
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    else:
        text = decode_file(args.input)
    read = task.read_predict(args.input, text)
    todo = [item for item in read.items if item is not None]
    outputs = task.predict(model, meta, todo) if todo else []
    if read.expand is not None:
        lines = read.expand(outputs)
    else:
        it = iter(outputs)
        lines = [next(it) if item is not None else "" for item in read.items]
    for line in lines:
        print(line)
    if read.note:
        print(read.note, file=sys.stderr)
    if read.targets is not None:
        pairs = [(o, t) for o, t in zip(outputs, [t for i, t in zip(read.items, read.targets, strict=True)
                                                  if i is not None], strict=True) if t]
        if pairs:
            score = task.score([o for o, _ in pairs], [t for _, t in pairs])
            print(f"scored against the file's '{read.target_name}' column: {score}", file=sys.stderr)
    return 0


def _export(args: argparse.Namespace) -> int:
    from rnnkit.export import BATCHES, LENGTHS, export_run

    path, diff = export_run(args.run, args.out, atol=args.atol)
    files = ", ".join(sorted(p.name for p in path.iterdir() if not p.name.startswith(".")))
    print(f"wrote {path}: {files}")
    print(f"onnxruntime matches PyTorch to {diff:.2g} (max abs difference) at batch sizes "
          f"{', '.join(map(str, BATCHES))} and lengths {', '.join(map(str, LENGTHS))}; "
          f"run it without rnnkit: python {path / 'run_onnx.py'} {path} INPUT")
    return 0


def _tasks(args: argparse.Namespace) -> int:
    from rnnkit.catalog import read_catalog  # no task is imported: the listing answers at once

    chosen = [t for t in read_catalog() if args.task in (None, t["task"])]
    if args.json:
        print(json.dumps([{k: v for k, v in t.items() if k != "defaults"} for t in chosen], indent=1))
        return 0
    for t in chosen:
        d = t["data"]
        print(f"{t['task']:10s} {t['title']} [{t['topology']}]")
        print(f"{'':10s} data:     {d['name']}: {d['source']}")
        print(f"{'':10s} size:     {d['size']}; licence: {d['licence']}")
        print(f"{'':10s} split:    {d['split']}")
        print(f"{'':10s} metric:   {t['metric']} ({'higher' if t['higher_is_better'] else 'lower'} is better); "
              f"baseline: {t['baseline']}")
        print(f"{'':10s} install:  {d['install']}")
        if args.task:
            print(f"{'':10s} --data:   {t['user_format']}")
            print(f"{'':10s} predict:  {t['predict_format']} (or the --data format)")
            print(f"{'':10s} defaults: {t['defaults']}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Call a parsed subcommand; data problems exit with status 2 and a message naming the file and line."""
    if args.command != "tasks":  # (listing the tasks imports nothing, so it needs no silencing)
        quiet(getattr(args, "verbose", False))
    try:
        return args.func(args)
    except Exception as err:
        if not _users_problem(err):
            raise
        print(f"rnnkit {args.command}: {err}", file=sys.stderr)
        return 2


def _users_problem(err: Exception) -> bool:
    """A bad data file, a missing package, a damaged run directory: a message, not a traceback.
    (The classes are imported here, after the fact, so that light commands import none of them.)"""
    if isinstance(err, FileNotFoundError):
        return True
    from rnnkit.data.bundled import DataUnavailable
    from rnnkit.data.readers import DataError
    from rnnkit.tasks.runner import RunError

    return isinstance(err, DataError | DataUnavailable | RunError)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="rnnkit", description="RNN tasks on real bundled data.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_task_commands(sub, only=next((a for a in argv if not a.startswith("-")), None), argv=argv)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
