"""Shared by the task tests: train a task briefly and check it against its baseline."""

from rnnkit.tasks import get_task
from rnnkit.tasks.runner import train_task


def train_small(tmp_path, name, **overrides):
    task = get_task(name)
    cfg = task.config(progress=False, **overrides)
    result = train_task(task, cfg, tmp_path)
    return task, result


def assert_beats(task, result, margin):
    ours, base = result.metrics[task.metric], result.baselines[task.baseline]
    assert task.beats(ours, base, margin), (
        f"{task.name}: {task.metric} {ours:.4g} does not beat {task.baseline} {base:.4g} by {margin}; "
        f"metrics {result.metrics}, baselines {result.baselines}"
    )
