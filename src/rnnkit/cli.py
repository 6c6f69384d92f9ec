"""The ``rnnkit`` command.

Each subcommand is a function of its own ``argv`` in :data:`COMMANDS`, imported only when it is
called: ``rnnkit --help`` and ``rnnkit tasks`` import neither torch nor Lightning. The flags of a
command are built by `tyro <https://brentyi.github.io/tyro/>`_ from its config dataclass (the
field comments are the help): ``rnnkit diagnose --hidden 128 --lengths 50 200 --no-progress``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "main"]

#: name -> (help, "module:function"); the function takes the command's argv and returns the exit code
COMMANDS: dict[str, tuple[str, str]] = {
    "diagnose": ("train every cell on the adding problem and report the exploding/vanishing gradient",
                 "rnnkit.cli:diagnose"),
    "train": ("train a task on its bundled data or --data PATH", "rnnkit.tasks_cli:train"),
    "resume": ("continue an interrupted or killed run from its last checkpoint", "rnnkit.tasks_cli:resume"),
    "evaluate": ("score a trained run on held-out data, with its baselines", "rnnkit.tasks_cli:evaluate"),
    "predict": ("run a trained model on lines of a file or stdin", "rnnkit.tasks_cli:predict"),
    "export": ("export a trained model to ONNX (dynamic axes) and check it in onnxruntime", "rnnkit.tasks_cli:export"),
    "tasks": ("list the tasks with their data, metric and baseline", "rnnkit.tasks_cli:tasks"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: rnnkit COMMAND [OPTIONS]   (rnnkit COMMAND --help for its options)", "",
             "rnnkit: recurrent neural networks on PyTorch", "", "commands:"]
    lines += [f"  {name:{width}s}  {text}" for name, (text, _) in COMMANDS.items()]
    return "\n".join(lines)


# -- diagnose ---------------------------------------------------------------------------------------
def diagnose(argv: list[str]) -> int:
    """Train every cell on the adding problem and report the exploding/vanishing gradient."""
    import tyro

    from rnnkit.diagnostics.report import DiagnoseConfig

    cfg = tyro.cli(DiagnoseConfig, args=argv, prog="rnnkit diagnose", description=COMMANDS["diagnose"][0])
    from rich.console import Console
    from rich.table import Table

    from rnnkit.diagnostics.report import HEADER, run_diagnose, table_rows

    console = Console(width=None if sys.stdout.isatty() else 200)  # logs and pipes: no wrapped table
    console.print(f"[bold]rnnkit diagnose[/bold]: adding problem, cells {list(cfg.cells) or 'all'}, "
                  f"T in {list(cfg.lengths)}, up to {cfg.steps} steps each; report in {cfg.out}/report.md")
    try:
        results = run_diagnose(cfg, echo=console.print)
    except ValueError as e:
        print(f"rnnkit diagnose: error: {e}", file=sys.stderr)
        return 2
    table = Table(*HEADER, title="adding problem (answering 1: MSE 0.167)")
    for row in table_rows(results):
        table.add_row(*row)
    console.print(table)
    console.print(f"report: {cfg.out}/report.md")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--verbose" not in argv:  # torch's C++ warnings (the ONNX exporter's shape inference): read at its import
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"{_usage()}\n\nrnnkit: error: unknown command {argv[0]!r}", file=sys.stderr)
        return 2
    module, function = COMMANDS[argv[0]][1].split(":")
    try:
        return getattr(importlib.import_module(module), function)(argv[1:])
    except BrokenPipeError:  # `rnnkit tasks | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
