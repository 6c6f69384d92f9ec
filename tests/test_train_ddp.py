"""Scale-out: the same training on 2 CPU processes (Lightning DDP, gloo) with half the batch per
process equals a single-process run with the whole batch.

The test runs this file as a script twice (Lightning's DDP launcher re-runs the script for the
second rank, which is why it is a script and not an in-process ``fit``), then compares weights.
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning")


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_PORT", "MASTER_ADDR", "LOCAL_RANK", "NODE_RANK",
                                                            "WORLD_SIZE", "RANK")}
    env["OMP_NUM_THREADS"] = "1"  # two processes on a small CI machine
    return env


def _run(out: Path, devices: int, batch: int) -> dict:
    from safetensors.torch import load_file

    cmd = [sys.executable, __file__, "--devices", str(devices), "--batch", str(batch), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return load_file(out / "weights.safetensors")


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(tmp_path):
    single = _run(tmp_path / "one", devices=1, batch=16)
    ddp = _run(tmp_path / "two", devices=2, batch=8)
    assert single.keys() == ddp.keys()
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], rtol=1e-4, atol=1e-5, msg=k)
    init = _initial_weights()
    moved = any(not torch.allclose(single[k], init[k]) for k in single)
    assert moved  # training happened


def _model():
    from torch import nn

    from rnnkit import Recurrent, make_cell

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = Recurrent(make_cell("gru", 3, 8))
            self.head = nn.Linear(8, 1)

        def forward(self, x, state=None, lengths=None):
            out, state = self.rnn(x, state, lengths)
            return self.head(out[:, -1]).squeeze(-1), state

    torch.manual_seed(0)
    return Model()


def _initial_weights():
    return {f"model.{k}": v for k, v in _model().state_dict().items()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--devices", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()

    from safetensors.torch import save_file

    from rnnkit.train import OptimConfig, ResumableLoader, TrainConfig, TrainModule, fit

    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 7, 3, generator=g)
    data = torch.utils.data.TensorDataset(x, x[:, :, 0].sum(1))
    module = TrainModule(_model(), "mse", optim=OptimConfig(lr=1e-2), clip_val=1.0)
    cfg = TrainConfig(
        max_steps=6, accelerator="cpu", devices=args.devices, strategy="ddp" if args.devices > 1 else "auto",
        out_dir=args.out, loggers=(), progress=False, checkpoint_every_n_steps=0, grad_monitor_every=None,
    )
    trainer = fit(module, ResumableLoader(data, args.batch, shuffle=True, seed=5), cfg=cfg)
    if trainer.is_global_zero:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, Path(args.out) / "weights.safetensors")


if __name__ == "__main__":
    main()
