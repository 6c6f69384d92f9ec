"""The task subcommands of ``rnnkit``: train, resume, evaluate, predict, export, tasks.

Each is a function of its ``argv``, called by :mod:`rnnkit.cli` (``COMMANDS``); ``python -m
rnnkit.tasks_cli`` runs them on their own. The flags are built by `tyro <https://brentyi.github.io/tyro/>`_
from the config dataclasses and their field comments: every field of :class:`TaskConfig` is a flag
of ``rnnkit train TASK`` (``--hidden 128 --cell gru --no-progress``) whose default is that task's,
and each option is checked when parsed (``--epochs must be >= 1, got -1``).
"""


import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

__all__ = ["evaluate", "export", "main", "predict", "quiet", "resume", "tasks", "train"]


def _task_names() -> list[str]:
    from rnnkit.catalog import read_catalog  # (no task is imported for the names)

    return [t["task"] for t in read_catalog()]


def _tyro(kind: Any, argv: list[str], prog: str, description: str | None = None, default: Any = None) -> Any:
    """Parse ``argv`` into ``kind`` with tyro: exit 0 on --help, exit 2 with the message on a bad flag."""
    import tyro

    extra = {} if default is None else {"default": default}
    return tyro.cli(kind, args=argv, prog=prog, description=description, config=(tyro.conf.OmitSubcommandPrefixes,),
                    **extra)


def _train_args_class():
    import tyro

    from rnnkit.tasks.base import TaskConfig

    @dataclass
    class TrainArgs:
        config: tyro.conf.OmitArgPrefixes[TaskConfig]
        recipe: str = "default"  # named option set over the task's defaults: default, quick (the tour), full
        out: str = "runs"  # parent of the run directory
        name: str | None = None  # run directory name (None: the task's name)
        overwrite: bool = False  # replace an earlier run of the same name (else: write NAME-2, NAME-3, ...)
        checkpoint_minutes: float = 0.0  # also checkpoint every MINUTES of training (0: at each epoch end only)
        verbose: bool = False  # show Lightning's banners and third-party warnings

        def __post_init__(self) -> None:
            if not self.checkpoint_minutes >= 0:
                raise ValueError(f"--checkpoint-minutes must be >= 0, got {self.checkpoint_minutes}")

    return TrainArgs


def train(argv: list[str]) -> int:
    """``rnnkit train TASK [flags]``: the flags are TaskConfig's, with TASK's defaults."""
    names = _task_names()
    if not argv or argv[0] not in names:
        return _train_usage(argv, names)
    from rnnkit.tasks import get_task
    from rnnkit.tasks.recipes import recipe

    task = get_task(argv[0])
    TrainArgs = _train_args_class()
    text = (f"Train {task.name} ({task.title}, {task.topology}) on {task.dataset.name}, or on --data PATH: "
            f"{task.user_format}. Writes a run directory (config, weights, metrics, plots, checkpoints).")
    name = _recipe_flag(argv[1:])
    try:
        chosen = recipe(task.name, name)
    except ValueError as err:
        print(f"rnnkit train {task.name}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    args = _tyro(TrainArgs, argv[1:], f"rnnkit train {task.name}", text,
                 default=TrainArgs(task.config(**chosen), recipe=name))
    return _guarded("train", args.verbose, lambda: _train(task, args, argv[1:]))


def _recipe_flag(argv: list[str]) -> str:
    """The value of ``--recipe`` in ``argv`` (``default`` when absent): it sets the other flags' defaults,
    so it is read before they are parsed."""
    for k, a in enumerate(argv):
        if a == "--recipe" and k + 1 < len(argv):
            return argv[k + 1]
        if a.startswith("--recipe="):
            return a.split("=", 1)[1]
    return "default"


def devices_warning(devices: int, accelerator: str, cpus: int | None = None) -> str | None:
    """A warning when ``--devices`` asks for more CPU processes than the machine has cores."""
    cpus = cpus or os.cpu_count() or 1
    if accelerator == "cpu" and devices > cpus:
        return (f"warning: --devices {devices} is more processes than this machine's {cpus} CPUs; "
                "they will compete for cores")
    return None


def _train_usage(argv: list[str], names: list[str]) -> int:
    lines = ["usage: rnnkit train TASK [OPTIONS]   (rnnkit train TASK --help: that task's defaults and data format)",
             "", "Train a task on its bundled data or --data PATH; writes a run directory.", "",
             f"TASK: {', '.join(names)}"]
    if argv and argv[0] in ("-h", "--help"):  # (like argparse and tyro: help and parse errors exit)
        print("\n".join(lines))
        raise SystemExit(0)
    problem = f"unknown task {argv[0]!r}" if argv else "a TASK is needed"
    print("\n".join(lines) + f"\n\nrnnkit train: error: {problem}", file=sys.stderr)
    raise SystemExit(2)


def _train(task: Any, args: Any, argv: list[str]) -> int:
    from rnnkit.tasks.runner import train_task
    from rnnkit.train.interrupt import RunInterrupted

    values = args.config.to_dict()
    if values["data"] and not any(a == "--max-train" or a.startswith("--max-train=") for a in argv):
        values["max_train"] = 0  # a user's file is read whole unless a cap is given
    cfg = task.config(**values)
    warning = devices_warning(cfg.devices, cfg.accelerator)
    if warning:
        print(warning, file=sys.stderr)
    try:
        result = train_task(task, cfg, args.out, args.name, overwrite=args.overwrite,
                            checkpoint_minutes=args.checkpoint_minutes)
    except RunInterrupted as stop:
        return _interrupted(stop, stop.checkpoint.parent.parent)
    return _finish(task, result)


def resume(argv: list[str]) -> int:
    """Continue an interrupted or killed run from RUN/checkpoints/last.ckpt to the weights an
    uninterrupted run reaches."""
    import tyro

    def command(run: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")],
                verbose: bool = False) -> tuple[str, bool]:
        """Continue RUN (a run directory written by `rnnkit train`) from its last checkpoint to the
        weights an uninterrupted run reaches."""
        return run, verbose

    run, verbose = _tyro(command, argv, "rnnkit resume")
    return _guarded("resume", verbose, lambda: _resume(run))


def _resume(run: str) -> int:
    from rnnkit.tasks import get_task
    from rnnkit.tasks.runner import resume_task
    from rnnkit.train.interrupt import RunInterrupted

    try:
        result = resume_task(run)
    except RunInterrupted as stop:
        return _interrupted(stop, run)
    return _finish(get_task(result.task), result)


def evaluate(argv: list[str]) -> int:
    import tyro

    def command(run: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")], data: str | None = None,
                verbose: bool = False):
        """Score a trained run on held-out data, with its baselines.

        Args:
            run: run directory written by `rnnkit train`
            data: score on this file's test split instead of the run's data
            verbose: show third-party warnings
        """
        return run, data, verbose

    run, data, verbose = _tyro(command, argv, "rnnkit evaluate")
    return _guarded("evaluate", verbose, lambda: _evaluate(run, data))


def _evaluate(run: str, data_path: str | None) -> int:
    from rnnkit.tasks.runner import load_run

    task, cfg, meta, model = load_run(run)
    if data_path:
        cfg.data = data_path
    data = task.prepare(cfg)
    meta = {**meta, **{k: data.meta[k] for k in task.data_keys}}
    data.meta = meta
    print(_report(task, {**task.evaluate(model, data.test, meta), **task.test_extras(model, data)},
                  task.baselines(data)))
    return 0


def predict(argv: list[str]) -> int:
    import textwrap

    import tyro

    from rnnkit.catalog import read_catalog

    def command(run: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")],
                input: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="INPUT")] = "-",
                verbose: bool = False):
        """Run a trained model on the lines of a file or stdin.

        Args:
            run: run directory written by `rnnkit train`
            input: input file (-: stdin)
            verbose: show third-party warnings
        """
        return run, input, verbose

    formats = "\n".join(textwrap.fill(f"{t['task']}: {t['predict_format']}", 96, initial_indent="  ",
                                       subsequent_indent="    ") for t in read_catalog())
    text = ("Run a trained model on the lines of a file or stdin: one output line per input line (blank lines "
            "kept). It reads the task's --data format (a table's header skipped, its gold column scored when "
            f"present) or the plain input per task:\n{formats}")
    run, path, verbose = _tyro(command, argv, "rnnkit predict", text)
    return _guarded("predict", verbose, lambda: _predict(run, path))


def export(argv: list[str]) -> int:
    import tyro

    def command(run: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")], out: str | None = None,
                atol: float = 1e-4, verbose: bool = False):
        """Export a trained model's inference graphs to ONNX and check them in onnxruntime.

        Args:
            run: run directory written by `rnnkit train`
            out: output directory (None: RUN/onnx)
            atol: largest allowed difference from PyTorch
            verbose: show third-party and exporter warnings
        """
        return run, out, atol, verbose

    run, out, atol, verbose = _tyro(command, argv, "rnnkit export")
    return _guarded("export", verbose, lambda: _export(run, out, atol))


def tasks(argv: list[str]) -> int:
    names = tuple(_task_names())

    def command(task: Literal[names] | None = None, json: bool = False):  # type: ignore[valid-type]
        """List the tasks with their data, metric and baseline.

        Args:
            task: show one task in full, with its --data and predict formats
            json: machine-readable output
        """
        return task, json

    task, as_json = _tyro(command, argv, "rnnkit tasks")
    return _guarded("tasks", True, lambda: _tasks(task, as_json))


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





#: suffixes of inputs that are files themselves: `rnnkit predict RUN photo.png` predicts that one file
_FILE_INPUTS = (".npy", ".wav", ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp")


def _predict(run: str, source: str) -> int:
    from rnnkit.data.readers import decode_file
    from rnnkit.tasks.runner import load_run

    task, _, meta, model = load_run(run)
    if source == "-":
        text = sys.stdin.read()
        if text.startswith("\ufeff"):
            text = text[1:]
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    elif task.input_is_path and Path(source).suffix.lower() in _FILE_INPUTS:
        text = str(source)  # the file itself is the one input (an image, a clip, a recording), not a list of them
    else:
        text = decode_file(source)
    read = task.read_predict(source, text)
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


def _export(run: str, out: str | None, atol: float) -> int:
    from rnnkit.export import BATCHES, LENGTHS, export_run

    path, diff = export_run(run, out, atol=atol)
    files = ", ".join(sorted(p.name for p in path.iterdir() if not p.name.startswith(".")))
    print(f"wrote {path}: {files}")
    print(f"onnxruntime matches PyTorch to {diff:.2g} (max abs difference) at batch sizes "
          f"{', '.join(map(str, BATCHES))} and lengths {', '.join(map(str, LENGTHS))}; "
          f"run it without rnnkit: python {path / 'run_onnx.py'} {path} INPUT")
    return 0


def _tasks(task: str | None, as_json: bool) -> int:
    from rnnkit.catalog import read_catalog  # no task is imported: the listing answers at once

    chosen = [t for t in read_catalog() if task in (None, t["task"])]
    if as_json:
        print(json.dumps([{k: v for k, v in t.items() if k not in ("defaults", "recipes")} for t in chosen], indent=1))
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
        if task:
            print(f"{'':10s} --data:   {t['user_format']}")
            print(f"{'':10s} predict:  {t['predict_format']} (or the --data format)")
            print(f"{'':10s} defaults: {t['defaults']}")
            for name, options in t["recipes"].items():
                if name != "default":
                    print(f"{'':10s} --recipe {name}: {options or 'the defaults'}")
    return 0


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


def _guarded(command: str, verbose: bool, body) -> int:
    """Run a command's body: data problems, a missing package or a damaged run exit with status 2
    and one line naming the file (and line); bad values (ValueError) likewise."""
    if command != "tasks":  # (listing the tasks imports nothing, so it needs no silencing)
        quiet(verbose)
    try:
        return body()
    except Exception as err:
        if not (_users_problem(err) or isinstance(err, ValueError)):
            raise
        print(f"rnnkit {command}: {err}", file=sys.stderr)
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
    from rnnkit.cli import main as rnnkit_main

    return rnnkit_main(argv)


if __name__ == "__main__":
    sys.exit(main())
