"""The applications of RNNs, each trainable from the ``rnnkit`` CLI on real bundled data.

``get_task(name)`` returns a :class:`Task`; :func:`rnnkit.tasks.runner.train_task` trains it.
This package imports Lightning and matplotlib; ``import rnnkit`` never imports it.
"""

from __future__ import annotations

import importlib

from rnnkit.tasks.base import TASKS, Prepared, Task, TaskConfig, get_task, register

__all__ = ["TASK_MODULES", "TASKS", "Prepared", "Task", "TaskConfig", "all_tasks", "get_task", "register"]

# one module per task, in the order of the guide
TASK_MODULES = ("forecast", "sentiment", "tagging", "g2p", "translate", "music", "chars", "speech", "caption", "image",
                "video", "frames", "summarize")


def _load_all() -> None:
    for name in TASK_MODULES:
        try:
            importlib.import_module(f"rnnkit.tasks.{name}")
        except ModuleNotFoundError as err:  # a task module not written yet; its own packages load lazily
            if err.name != f"rnnkit.tasks.{name}":
                raise


def all_tasks() -> list[Task]:
    """Every task, in the guide's order (not the order their modules happened to be imported)."""
    _load_all()
    return sorted(TASKS.values(), key=lambda t: TASK_MODULES.index(t.name) if t.name in TASK_MODULES else 99)
