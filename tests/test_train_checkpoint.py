"""Safetensors checkpoints: round trip, refusal of corrupted or mismatched files, and resume
after an interruption that gives bit-identical weights."""

import json

import pytest
import torch
from torch import nn

pytest.importorskip("lightning")
pytest.importorskip("safetensors")

import lightning as L  # noqa: E402

from rnnkit import Recurrent, make_cell  # noqa: E402
from rnnkit.train import (  # noqa: E402
    OptimConfig,
    ResumableLoader,
    TrainConfig,
    TrainModule,
    fit,
    load_weights,
    read_checkpoint,
    write_checkpoint,
)


class Tiny(nn.Module):
    """Two stacked LSTM layers with dropout between them (so resume must restore the RNG)."""

    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.rnn = Recurrent(make_cell("lstm", 3, hidden), num_layers=2, dropout=0.3)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x, state=None, lengths=None):
        out, state = self.rnn(x, state, lengths)
        return self.head(out[:, -1]).squeeze(-1), state


def _data(n: int = 40, steps: int = 6):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, steps, 3, generator=g)
    y = x[:, :, 0].sum(1)
    return torch.utils.data.TensorDataset(x, y)


def test_round_trip_keeps_every_value(tmp_path):
    ckpt = {
        "state_dict": {"w": torch.randn(3, 2), "b": torch.zeros(2, dtype=torch.bfloat16)},
        "optimizer_states": [{"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"betas": (0.9, 0.99)}]}],
        "loops": {"x": [1, 2.5, None, True, float("inf")]},
        "__odd": "key",
    }
    write_checkpoint(ckpt, tmp_path / "a.ckpt")
    back = read_checkpoint(tmp_path / "a.ckpt")
    assert torch.equal(back["state_dict"]["w"], ckpt["state_dict"]["w"])
    assert back["state_dict"]["b"].dtype == torch.bfloat16
    assert back["optimizer_states"][0]["state"][0]["step"].item() == 3.0  # int keys survive
    assert back["optimizer_states"][0]["param_groups"][0]["betas"] == (0.9, 0.99)  # tuples too
    assert back["loops"]["x"] == [1, 2.5, None, True, float("inf")]
    assert back["__odd"] == "key"
    with pytest.raises(TypeError, match="without pickle"):
        write_checkpoint({"f": object()}, tmp_path / "b.ckpt")
    assert not (tmp_path / "b.ckpt").exists()  # a failed write leaves nothing behind
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]


def test_overwrite_is_whole(tmp_path):
    write_checkpoint({"state_dict": {"w": torch.ones(2)}}, tmp_path / "last.ckpt")
    write_checkpoint({"state_dict": {"w": torch.full((2,), 7.0)}}, tmp_path / "last.ckpt")
    assert torch.equal(read_checkpoint(tmp_path / "last.ckpt")["state_dict"]["w"], torch.full((2,), 7.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_corrupted_or_mismatched_checkpoint_is_refused(tmp_path):
    model = Tiny()
    path = write_checkpoint({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}},
                            tmp_path / "c.ckpt")
    load_weights(Tiny(), path)  # intact: loads

    weights = path / "weights.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 0xFF  # flip bits in the last tensor's data
    weights.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"weights\.safetensors: sha256 .* corrupted"):
        read_checkpoint(path)
    with pytest.raises(ValueError, match="corrupted"):
        load_weights(Tiny(), path)

    (path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json: unreadable"):
        read_checkpoint(path)

    other = write_checkpoint({"state_dict": Tiny(hidden=5).state_dict()}, tmp_path / "d.ckpt")
    with pytest.raises(ValueError, match=r"d\.ckpt/weights\.safetensors: the weights do not match.*shape mismatch"):
        load_weights(Tiny(), other)
    with pytest.raises(ValueError, match="not an rnnkit checkpoint"):
        read_checkpoint(tmp_path)


def test_lightning_resume_refuses_a_mismatched_model(tmp_path):
    cfg = TrainConfig(max_steps=2, out_dir=str(tmp_path), progress=False, loggers=(), grad_monitor_every=None)
    torch.manual_seed(0)
    fit(TrainModule(Tiny(), optim=OptimConfig(lr=1e-2)), ResumableLoader(_data(), 8), cfg=cfg)
    last = tmp_path / "rnnkit" / "checkpoints" / "last.ckpt"
    assert json.loads((last / "config.json").read_text())["global_step"] == 2
    cfg.max_steps, cfg.resume = 4, str(last)
    with pytest.raises(ValueError, match=r"last\.ckpt: the weights do not match the model"):
        fit(TrainModule(Tiny(hidden=5)), ResumableLoader(_data(), 8), cfg=cfg)


class _Crash(L.Callback):
    """Simulates a crash: raises at the start of optimizer step ``at``."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at:
            raise RuntimeError("simulated crash")


def _train(tmp, steps, every, *, crash=None, resume=None, seed_model=0):
    torch.manual_seed(seed_model)
    module = TrainModule(Tiny(), "mse", optim=OptimConfig(lr=5e-3, schedule="cosine", warmup_steps=2),
                         clip_val=0.5, model_config={"cell": "lstm", "hidden": 8})
    cfg = TrainConfig(max_steps=steps, out_dir=str(tmp), progress=False, loggers=(), checkpoint_every_n_steps=every,
                      grad_monitor_every=None, resume=resume)
    fit(module, ResumableLoader(_data(), 8, shuffle=True, seed=3), cfg=cfg,
        callbacks=[_Crash(crash)] if crash is not None else None)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("every, crash", [(3, 8), (5, 11)], ids=["mid-epoch", "epoch-boundary"])
def test_interrupted_and_resumed_training_is_bit_identical(tmp_path, every, crash):
    steps = 13  # 5 batches per epoch: the runs cross epoch boundaries
    reference = _train(tmp_path / "a", steps, every)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _train(tmp_path / "b", steps, every, crash=crash)
    last = tmp_path / "b" / "rnnkit" / "checkpoints" / "last.ckpt"
    assert json.loads((last / "config.json").read_text())["global_step"] == (crash // every) * every
    resumed = _train(tmp_path / "b", steps, every, resume=str(last), seed_model=123)  # other init: must be loaded
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
