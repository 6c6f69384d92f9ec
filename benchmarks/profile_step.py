"""Where one training step's device time goes: ``torch.profiler`` over forward + backward of a
case of ``custom_cells.py`` (or minGRU/minLSTM), printing the operators and kernels with the most
self time, their call counts, and the step's wall time.

    python benchmarks/profile_step.py --case ln_lstm_triton --size B8,T2048,I128,H128 --device cuda
    python benchmarks/profile_step.py --case mingru --size B8,T16384,I128,H128 --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
import rnnkit  # noqa: E402
from common import parse_size  # noqa: E402
from custom_cells import CASES  # noqa: E402
from rnnkit.cells.minimal import MinGRUCell, MinLSTMCell  # noqa: E402

MINIMAL = {"mingru": MinGRUCell, "minlstm": MinLSTMCell}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", required=True, choices=[*CASES, *MINIMAL])
    parser.add_argument("--size", default="B32,T256,I256,H256")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rows", type=int, default=15, help="table rows")
    args = parser.parse_args()
    B, T, I, H = parse_size(args.size)
    device = torch.device(args.device)
    if args.case in MINIMAL:
        layer = rnnkit.Recurrent(MINIMAL[args.case](I, H), backend="parallel").to(device)
    else:
        layer = CASES[args.case][1](I, H).to(device)
    x = torch.randn(T, B, I, device=device)
    if not isinstance(layer, torch.nn.LSTM | torch.nn.GRU) and hasattr(layer, "explain"):
        x = x.transpose(0, 1) if getattr(layer, "batch_first", False) else x
        print(f"path: {layer.explain(x).path}")

    def step() -> None:
        out, _ = layer(x)
        out.sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):  # compile, capture, warm
        step()
    t0 = time.perf_counter()
    step()
    print(f"one step: {(time.perf_counter() - t0) * 1e3:.2f} ms wall")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=args.rows))


if __name__ == "__main__":
    main()
