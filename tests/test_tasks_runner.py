"""The task runner's keep-best: the model tested is the best validation epoch's, not the last."""
# (on by default for sentiment only; see Task.select_on_metric for why)

import math

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from rnnkit.tasks import get_task
from rnnkit.tasks.runner import train_task
from rnnkit.train import read_checkpoint


def _val_history(run_dir, column):
    history = pd.read_csv(run_dir / "history.csv")
    return history.dropna(subset=[column])[column].tolist()


@pytest.mark.parametrize("keep_best", [True, False])
def test_metric_selection_restores_the_best_validation_epoch(tmp_path, keep_best):
    # sentiment selects on validation accuracy; a small, fast-learning run whose accuracy moves between epochs
    task = get_task("sentiment")
    cfg = task.config(max_train=3000, epochs=4, hidden=16, embedding=16, lr=2e-2, progress=False,
                      keep_best=keep_best, ensemble=1)
    result = train_task(task, cfg, tmp_path)
    val = task.evaluate(result.model, result.data.val, result.data.meta)["accuracy"]
    if keep_best:
        scores = _val_history(result.run_dir, "val_accuracy")
        assert len(scores) == 4 and len(set(scores)) > 1, scores  # otherwise any epoch would pass
        assert val == pytest.approx(max(scores), abs=1e-6), (val, scores)
        assert (result.run_dir / "best.ckpt").is_dir()
    else:
        assert not (result.run_dir / "best.ckpt").exists()
        assert "val_accuracy" not in pd.read_csv(result.run_dir / "history.csv").columns


def test_loss_selection_keeps_the_lowest_validation_loss(tmp_path):
    task = get_task("forecast")
    result = train_task(task, task.config(epochs=6, progress=False, keep_best=True), tmp_path)
    losses = _val_history(result.run_dir, "val_loss")
    best = read_checkpoint(result.run_dir / "best.ckpt")
    assert len(losses) == 6 and all(map(math.isfinite, losses)), losses  # forecast's was NaN (an empty mask)
    assert best["epoch"] == min(range(len(losses)), key=losses.__getitem__), (best["epoch"], losses)
    saved = load_file(result.run_dir / "weights.safetensors")
    for name, value in best["state_dict"].items():  # TrainModule keys carry "model."
        torch.testing.assert_close(saved[name.removeprefix("model.")], value, rtol=0, atol=0)
