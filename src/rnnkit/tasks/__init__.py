"""The applications of RNNs, each trainable from the ``rnnkit`` CLI on real bundled data.

``get_task(name)`` returns a :class:`Task`; :func:`rnnkit.tasks.runner.train_task` trains it.
This package imports Lightning and matplotlib; ``import rnnkit`` never imports it.
"""

from __future__ import annotations

import importlib

from rnnkit.tasks.base import TASKS, Prepared, Task, TaskConfig, get_task, register

__all__ = ["TASK_MODULES", "TASKS", "Prepared", "Task", "TaskConfig", "get_task", "register"]

# one module per task, in the order of the guide
TASK_MODULES = ("forecast", "sentiment", "tagging", "translate", "music", "chars", "speech", "caption")


def _load_all() -> None:
    for name in TASK_MODULES:
        try:
            importlib.import_module(f"rnnkit.tasks.{name}")
        except ModuleNotFoundError as err:  # a task module not written yet; its own packages load lazily
            if err.name != f"rnnkit.tasks.{name}":
                raise
