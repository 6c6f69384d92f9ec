"""Checkpoint averaging (``--average N``): the kept weights are the mean of the weights at the last N
epoch ends, validation sees the average once there is one, and a run resumed from a checkpoint
averages exactly what the uninterrupted run averaged."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("lightning")

import lightning as L  # noqa: E402

from rnnkit.tasks import get_task  # noqa: E402
from rnnkit.train import OptimConfig, ResumableLoader, TrainConfig, TrainModule, fit  # noqa: E402
from rnnkit.train.averaging import EpochAverage  # noqa: E402
from test_train_checkpoint import Tiny, _Crash, _data  # noqa: E402

BATCHES = 5  # 40 examples in batches of 8


class _EpochEnds(L.Callback):
    """The live weights after each epoch's last optimizer step, and the weights each validation saw."""

    def __init__(self) -> None:
        self.ends: list[dict[str, torch.Tensor]] = []
        self.validated: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, *args):
        if trainer.is_last_batch:
            self.ends.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})

    def on_validation_epoch_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.validated.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def _train(tmp, epochs: int, average: int, *, crash=None, resume=None, seed_model=0, val=False):
    torch.manual_seed(seed_model)
    module = TrainModule(Tiny(), "mse", optim=OptimConfig(lr=2e-2), model_config={"cell": "lstm"})
    cfg = TrainConfig(max_epochs=epochs, out_dir=str(tmp), progress=False, loggers=(), grad_monitor_every=None,
                      resume=resume)
    seen = _EpochEnds()
    callbacks = [EpochAverage(average), seen] + ([_Crash(crash)] if crash is not None else [])
    fit(module, ResumableLoader(_data(), 8, shuffle=True, seed=3),
        ResumableLoader(_data(16), 8) if val else None, cfg=cfg, callbacks=callbacks, num_sanity_val_steps=0)
    return module, seen


def test_the_kept_weights_are_the_mean_of_the_last_epoch_ends(tmp_path):
    module, seen = _train(tmp_path, epochs=4, average=2, val=True)
    assert len(seen.ends) == 4
    for name, got in module.state_dict().items():
        want = (seen.ends[2][name] + seen.ends[3][name]) / 2
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7, msg=name)
    assert any(not torch.equal(module.state_dict()[k], seen.ends[3][k]) for k in seen.ends[3])  # not the last
    # validations 1-2 see the live weights; validation 3 the one-epoch average, i.e. epoch 3's weights;
    # validation 4 the mean of epochs 3 and 4 (the validation runs after the epoch's last step)
    for k in seen.ends[0]:
        assert torch.equal(seen.validated[0][k], seen.ends[0][k]) and torch.equal(seen.validated[1][k], seen.ends[1][k])
        torch.testing.assert_close(seen.validated[2][k], seen.ends[2][k])
        torch.testing.assert_close(seen.validated[3][k], (seen.ends[2][k] + seen.ends[3][k]) / 2)


@pytest.mark.slow
def test_a_resumed_run_averages_what_the_uninterrupted_run_averaged(tmp_path):
    reference, _ = _train(tmp_path / "a", epochs=4, average=3)
    crash = 2 * BATCHES + 2  # in the third epoch: the average already holds the second epoch's end
    with pytest.raises(RuntimeError, match="simulated crash"):
        _train(tmp_path / "b", epochs=4, average=3, crash=crash)
    last = tmp_path / "b" / "rnnkit" / "checkpoints" / "last.ckpt"
    resumed, _ = _train(tmp_path / "b", epochs=4, average=3, resume=str(last), seed_model=9)
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="averages the last 3 epochs, this run 2"):
        _train(tmp_path / "b", epochs=4, average=2, resume=str(last))


def test_average_options_are_checked():
    with pytest.raises(ValueError, match="--average 3 and --keep-best both choose"):
        get_task("forecast").config(average=3, keep_best=True)
    with pytest.raises(ValueError, match="--average must be >= 0"):
        get_task("forecast").config(average=-1)
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        EpochAverage(0)
