"""Parallel-in-time recurrences against torch.nn.GRU: forward + backward, same process.

For each T, times one training step (forward, ``sum`` loss, backward into the parameters) of
``torch.nn.GRU`` (oneDNN on CPU, cuDNN on GPU), and of ``rnnkit.Recurrent`` with ``MinGRUCell``,
``MinLSTMCell`` (parallel scans) and ``DeerGRUCell`` (quasi-DEER GRU, ``backend="parallel"``),
all at batch B, input I and hidden H. Prints the median of ``--repeats`` runs after
``--warmup`` runs, and ``speedup = t(torch.nn.GRU) / t(case)`` (> 1: faster than torch).

    python benchmarks/parallel.py                      # T in 256 1024 4096, B=8, H=128 (~2 min on 2 cores)
    python benchmarks/parallel.py --full               # T in 256 1024 4096 16384
    python benchmarks/parallel.py --T 512 2048 --cases mingru deer --threads 1
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import rnnkit  # noqa: E402
from common import time_interleaved  # noqa: E402
from rnnkit.cells.minimal import MinGRUCell, MinLSTMCell  # noqa: E402
from rnnkit.scan.deer import DeerGRUCell, DeerNotConverged  # noqa: E402

DEFAULT_T = [256, 1024, 4096]
FULL_T = [256, 1024, 4096, 16384]
CASES = ("mingru", "minlstm", "deer")


def train_step(module: torch.nn.Module, x: torch.Tensor):
    def run() -> None:
        module.zero_grad(set_to_none=True)
        out, _ = module(x)
        out.sum().backward()

    return run


def build(case: str, input_size: int, hidden: int, device: torch.device, args) -> torch.nn.Module:
    if case == "mingru":
        cell = MinGRUCell(input_size, hidden, scan=args.scan, device=device)
    elif case == "minlstm":
        cell = MinLSTMCell(input_size, hidden, scan=args.scan, device=device)
    else:
        cell = DeerGRUCell(input_size, hidden, tol=args.tol, max_iter=args.max_iter, device=device)
    return rnnkit.Recurrent(cell, batch_first=False, backend="parallel")


def chunk_sweep(steps: list[int], B: int, H: int, device: torch.device, repeats: int) -> None:
    """minGRU's fused scan kernels alone, forward + backward, for several time-chunk lengths,
    channel blocks and warps per program (the module's defaults are restored afterwards)."""
    from rnnkit.scan.triton import min_scan

    saved = min_scan._MAX_CHUNKS, min_scan._BN, min_scan._WARPS
    configs = [(64, 32, 4), (64, 64, 4), (64, 128, 4), (64, 128, 8), (32, 128, 4), (128, 64, 4), (16, 32, 4)]
    for T in steps:
        x = torch.randn(T, B, 2 * H, device=device, requires_grad=True)
        h0 = torch.zeros(B, H, device=device)
        fns = {}
        for ch, bn, w in configs:
            def run(ch=ch, bn=bn, w=w, T=T, x=x, h0=h0):
                min_scan._MAX_CHUNKS, min_scan._BN, min_scan._WARPS = max(1, T // ch), bn, w
                min_scan.min_scan(x, h0, None, 2).sum().backward()
            fns[f"chunk {ch} block {bn} warps {w}"] = run
        try:
            times = time_interleaved(fns, max(repeats, 5))
        finally:
            min_scan._MAX_CHUNKS, min_scan._BN, min_scan._WARPS = saved
        for name, t in sorted(times.items(), key=lambda kv: kv[1]):
            print(f"T={T:6d}  min_scan {name:28s} {t * 1e3:8.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--T", type=int, nargs="+", default=None, help=f"sequence lengths (default {DEFAULT_T})")
    parser.add_argument("--full", action="store_true", help=f"T in {FULL_T}")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--input", type=int, default=None, help="input size (default: hidden)")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--scan", choices=("auto", "log", "linear"), default="auto", help="minGRU/minLSTM scan")
    parser.add_argument("--tol", type=float, default=1e-5, help="quasi-DEER tolerance")
    parser.add_argument("--max-iter", type=int, default=100, help="quasi-DEER iteration cap")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--chunk-sweep", action="store_true",
                        help="CUDA: time minGRU's fused Triton scan alone (fwd+bwd) for each time-chunk length")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    steps = args.T or (FULL_T if args.full else DEFAULT_T)
    B, H = args.batch, args.hidden
    if args.chunk_sweep:
        chunk_sweep(steps, B, H, device, args.repeats)
        return
    I = args.input or H
    print(f"# device={device} threads={torch.get_num_threads()} torch={torch.__version__} B={B} I={I} H={H} "
          f"fwd+bwd, median of {args.repeats} after {args.warmup} warm-up; speedup = t(torch.nn.GRU) / t(case)")
    torch.manual_seed(0)
    names = {"gru": "torch.nn.GRU", "mingru": "minGRU", "minlstm": "minLSTM", "deer": "quasi-DEER GRU"}
    for T in steps:
        x = torch.randn(T, B, I, device=device)
        modules = {"gru": torch.nn.GRU(I, H, device=device)}
        modules.update({case: build(case, I, H, device, args) for case in args.cases})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DeerNotConverged)
            times = time_interleaved({k: train_step(m, x) for k, m in modules.items()}, args.repeats, args.warmup)
        for case, t in times.items():
            extra = ""
            if case == "deer":
                stats = modules[case].cells[0].stats
                extra = (f"  (newton iters fwd {stats.get('iterations')}, bwd {stats.get('backward_iterations')}"
                         f"{', FELL BACK to sequential' if caught else ''})")
            speedup = times["gru"] / t
            print(f"T={T:6d}  {names[case]:15s} {t * 1e3:10.1f} ms  speedup {speedup:5.2f}x{extra}", flush=True)


if __name__ == "__main__":
    main()
