"""The ``rnnkit`` command.

Subcommands register themselves in :data:`COMMANDS` with a function that adds their arguments
and one that runs them; ``diagnose`` is the first. A subcommand driven by a config dataclass gets
one ``--flag`` per field (``--hidden 128``, ``--lengths 50 200``, ``--no-progress``), so the CLI
overrides a config by name and nothing is ever ``exec``'d.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["COMMANDS", "add_dataclass_arguments", "dataclass_from_args", "main"]

#: name -> (help, add_arguments(parser), run(args) -> exit code)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def _field_comments(cls: type) -> dict[str, str]:
    """The ``# comment`` after each field in the dataclass source: its help text."""
    import inspect

    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments, last = {}, None
    for line in source.splitlines():
        stripped = line.strip()
        head = stripped.split(":", 1)[0]
        if ":" in stripped and head.isidentifier() and "#" in stripped:
            last = head
            comments[last] = stripped.split("#", 1)[1].strip()
        elif stripped.startswith("#") and last is not None:
            comments[last] += " " + stripped.lstrip("#").strip()
        elif ":" in stripped and head.isidentifier():
            last = None
    return comments


def _base_type(tp: Any) -> tuple[Any, bool]:
    """``(element type, is a sequence)`` for int, float, str, bool, X | None, tuple[X, ...]."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    if origin in (tuple, list):
        return typing.get_args(tp)[0], True
    return tp, False


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--name`` per field of the dataclass ``cls`` (underscores become dashes)."""
    hints = typing.get_type_hints(cls)
    comments = _field_comments(cls)
    for f in dataclasses.fields(cls):
        tp, many = _base_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f"{comments.get(f.name, '')} (default: {default})".strip()
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            parser.add_argument(flag, type=tp, nargs="+" if many else None, default=default, help=help_text,
                                metavar=f.name.upper())


def dataclass_from_args(cls: type, args: argparse.Namespace) -> Any:
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name)
        _, many = _base_type(hints[f.name])
        values[f.name] = tuple(v) if many and v is not None else v
    return cls(**values)


# -- diagnose ---------------------------------------------------------------------------------------
def _diagnose_arguments(parser: argparse.ArgumentParser) -> None:
    from rnnkit.diagnostics.report import DiagnoseConfig

    add_dataclass_arguments(parser, DiagnoseConfig)


def _diagnose(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from rnnkit.diagnostics.report import HEADER, DiagnoseConfig, run_diagnose, table_rows

    cfg = dataclass_from_args(DiagnoseConfig, args)
    console = Console(width=None if sys.stdout.isatty() else 200)  # logs and pipes: no wrapped table
    console.print(f"[bold]rnnkit diagnose[/bold]: adding problem, cells {list(cfg.cells) or 'all'}, "
                  f"T in {list(cfg.lengths)}, up to {cfg.steps} steps each; report in {cfg.out}/report.md")
    results = run_diagnose(cfg, echo=console.print)
    table = Table(*HEADER, title="adding problem (answering 1: MSE 0.167)")
    for row in table_rows(results):
        table.add_row(*row)
    console.print(table)
    console.print(f"report: {cfg.out}/report.md")
    return 0


COMMANDS["diagnose"] = (
    "train every cell on the adding problem and report the exploding/vanishing gradient",
    _diagnose_arguments,
    _diagnose,
)


def build_parser(command: str | None = "*", argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The ``rnnkit`` parser. Only ``command``'s arguments are built ("*": every command's; None:
    none, for ``rnnkit --help``), so that a command imports only what it needs."""
    parser = argparse.ArgumentParser(prog="rnnkit", description="rnnkit: recurrent neural networks on PyTorch")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if command in ("*", name):
            add_arguments(p)
        p.set_defaults(_run=run)
    from rnnkit.tasks_cli import add_task_commands  # train, resume, evaluate, predict, export, tasks

    add_task_commands(sub, only=command, argv=argv)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (its first word that is not an option), or None."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--verbose" not in argv:  # torch's C++ warnings (the ONNX exporter's shape inference): read at its import
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    args = build_parser(_command(argv), argv).parse_args(argv)
    try:
        return args._run(args)
    except ValueError as e:
        print(f"rnnkit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
