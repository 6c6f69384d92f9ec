"""The task catalog: what ``rnnkit tasks`` prints, readable without importing any task.

``catalog.json`` (next to this module) holds every task's :meth:`~rnnkit.tasks.base.Task.describe`
plus its defaults, in the guide's order. ``rnnkit tasks`` reads it, so the listing answers without
importing torch, Lightning or matplotlib. A test checks that it equals what the task classes say;
after changing a task, regenerate it with ``python -m rnnkit.catalog``. (It sits outside
:mod:`rnnkit.tasks`, whose package imports torch.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["CATALOG", "build_catalog", "read_catalog"]

CATALOG = Path(__file__).with_name("catalog.json")


def build_catalog() -> list[dict[str, Any]]:
    """The catalog from the task classes themselves (imports every task)."""
    from rnnkit.tasks import all_tasks
    from rnnkit.tasks.recipes import recipe, recipe_names

    return [{**t.describe(), "defaults": t.config().to_dict(),
             "recipes": {r: recipe(t.name, r) for r in recipe_names()}} for t in all_tasks()]


def read_catalog() -> list[dict[str, Any]]:
    return json.loads(CATALOG.read_text())


if __name__ == "__main__":
    CATALOG.write_text(json.dumps(build_catalog(), indent=1) + "\n")
    print(f"wrote {CATALOG}")
