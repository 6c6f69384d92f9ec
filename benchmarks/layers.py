"""Forward+backward time of rnnkit.RNN/GRU/LSTM against torch.nn's, measured side by side.

    python benchmarks/layers.py                       # the reference sizes
    python benchmarks/layers.py --sizes B16,T128,I64,H64 --repeats 5

For each size and cell: torch.nn, rnnkit on the fused path (backend="auto": the same vendor
kernel, through rnnkit's checks), rnnkit's fast engine (backend="fast": one autograd Function per
layer with a hand-written backward through time) and the reference engine (backend="sequential":
rnnkit cells in a Python loop under autograd). Prints medians and ratios to torch.nn.

    python benchmarks/layers.py --compile --sizes B8,T64,I64,H64   # adds compiled columns

``--compile`` adds ``torch.compile(fullgraph=True)`` of the fused and fast layers (inductor), with
the time of the first (compiling) call printed beside the steady-state ratio. Compiled code traces
the fast engine's plain form, unrolled over T, so compile time grows with T.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import rnnkit  # noqa: E402
from common import parse_size, time_interleaved  # noqa: E402

PATHS = {"fused": "auto", "fast": "fast", "loop": "sequential"}  # column -> backend
PAIRS = {"RNN": (nn.RNN, rnnkit.RNN), "GRU": (nn.GRU, rnnkit.GRU), "LSTM": (nn.LSTM, rnnkit.LSTM)}


def step_fn(layer: nn.Module, x: torch.Tensor):
    def run() -> None:
        out, _ = layer(x)
        out.sum().backward()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["B32,T256,I256,H256", "B8,T2048,I128,H128"])
    parser.add_argument("--cells", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--compile", action="store_true", help="add compiled fused/fast columns (slow to build)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeats}, fwd+bwd")
    columns = [*PATHS, *(["fused+c", "fast+c"] if args.compile else [])]
    print(f"{'size':<22}{'cell':<6}{'torch.nn ms':>12}" + "".join(f"{n + ' ms':>11}{'ratio':>7}" for n in columns)
          + ("   compile s (fused, fast)" if args.compile else ""))
    for size in args.sizes:
        B, T, I, H = parse_size(size)
        x = torch.randn(T, B, I)
        for name in args.cells:
            torch_cls, ours_cls = PAIRS[name]
            layers = {"torch": torch_cls(I, H)}
            for path, backend in PATHS.items():
                layers[path] = ours_cls(I, H, backend=backend)
                layers[path].load_state_dict(layers["torch"].state_dict())
            fns = {k: step_fn(layer, x) for k, layer in layers.items()}
            built = ""
            if args.compile:
                spent = []
                for path in ("fused", "fast"):
                    torch._dynamo.reset()
                    fns[path + "+c"] = step_fn(torch.compile(layers[path], fullgraph=True), x)
                    start = time.perf_counter()
                    fns[path + "+c"]()  # the first call compiles forward and backward
                    spent.append(time.perf_counter() - start)
                built = f"   {spent[0]:.1f}, {spent[1]:.1f}"
            times = time_interleaved(fns, args.repeats)
            t0 = times["torch"]
            cols = "".join(f"{times[p] * 1e3:>11.1f}{times[p] / t0:>7.2f}" for p in columns)
            print(f"{size:<22}{name:<6}{t0 * 1e3:>12.1f}{cols}{built}", flush=True)


if __name__ == "__main__":
    main()
