"""Custom cells on rnnkit's fast engine against torch.nn.LSTM, forward+backward, side by side.

    python benchmarks/custom_cells.py                          # the reference sizes, every case
    python benchmarks/custom_cells.py --threads 1 --repeats 9
    python benchmarks/custom_cells.py --sizes B16,T128,I64,H64 --cases lstm_fast ln_lstm_fast
    python benchmarks/custom_cells.py --device cuda          # adds the Triton path; anchor = cuDNN LSTM
    python benchmarks/custom_cells.py --sweep                # H 64..1024 at B32 T256, B 1/8/64 at H256

Every case runs one layer on the same input ``(T, B, I)`` and sums the output for backward;
all cases of a size are timed interleaved, the order rotated every round (whatever runs right
after torch.nn.LSTM was measured ~70 ms slower at B8 T2048 on the development machine, so no case
should always hold that seat), and divided by torch.nn.LSTM's median from the same run.
``*_loop`` cases are the plain per-step autograd loop (rnnkit's sequential reference), the
"LSTMCell + for-loop" most users write; ``*_pysteps`` cases run the fast engine with its forward
steps in Python (as before the C++ loops), the other ``*_fast`` cases with them in C++ (CPU);
``*_triton`` cases (CUDA only) run the Triton kernels (:mod:`rnnkit.scan.triton`), their loops
replayed as CUDA graphs, and ``*_triton_launches`` the same as plain launches. The first
lines say whether the C++ loops were built or loaded, and how long that took.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import rnnkit  # noqa: E402
from common import parse_size, time_interleaved  # noqa: E402
from rnnkit.scan.fast.native import BUILD, native_ops, python_loops  # noqa: E402

#: name -> (description, factory(I, H) -> module)
CASES: dict[str, tuple[str, Callable[[int, int], nn.Module]]] = {
    "torch_lstm": ("torch.nn.LSTM (anchor)", lambda i, h: nn.LSTM(i, h)),
    "lstm_fast": ("LSTM, rnnkit fast engine", lambda i, h: rnnkit.LSTM(i, h, backend="fast")),
    "ln_lstm_fast": ("LayerNorm-LSTM, fast engine", lambda i, h: rnnkit.LSTM(i, h, layer_norm=True, backend="fast")),
    "ln_lstm_pysteps": ("LayerNorm-LSTM, fast engine, Python steps", lambda i, h: rnnkit.LSTM(
        i, h, layer_norm=True, backend="fast")),
    "ln_lstm_loop": ("LayerNorm-LSTM, autograd loop", lambda i, h: rnnkit.LSTM(i, h, layer_norm=True,
                                                                               backend="sequential")),
    "peephole_fast": ("peephole LSTM, fast engine", lambda i, h: rnnkit.LSTM(i, h, peephole=True, backend="fast")),
    "zoneout_fast": ("LSTM + zoneout 0.1 + rec. dropout 0.25", lambda i, h: rnnkit.LSTM(
        i, h, zoneout=0.1, recurrent_dropout=0.25, backend="fast")),
    "torch_gru": ("torch.nn.GRU", lambda i, h: nn.GRU(i, h)),
    "ln_gru_fast": ("LayerNorm-GRU, fast engine", lambda i, h: rnnkit.GRU(i, h, layer_norm=True, backend="fast")),
    "indrnn_fast": ("IndRNN (relu), fast engine", lambda i, h: rnnkit.Recurrent(
        rnnkit.IndRNNCell(i, h), batch_first=False, backend="fast")),
    "lstm_triton": ("LSTM, Triton kernels", lambda i, h: rnnkit.LSTM(i, h, backend="triton")),
    "ln_lstm_triton": ("LayerNorm-LSTM, Triton kernels", lambda i, h: rnnkit.LSTM(
        i, h, layer_norm=True, backend="triton")),
    "ln_gru_triton": ("LayerNorm-GRU, Triton kernels", lambda i, h: rnnkit.GRU(
        i, h, layer_norm=True, backend="triton")),
    "ln_lstm_triton_launches": ("LayerNorm-LSTM, Triton, no CUDA graphs", lambda i, h: rnnkit.LSTM(
        i, h, layer_norm=True, backend="triton")),
}
DEFAULT = ["torch_lstm", "lstm_fast", "ln_lstm_fast", "ln_lstm_pysteps", "ln_lstm_loop", "peephole_fast",
           "zoneout_fast", "torch_gru", "ln_gru_fast", "indrnn_fast"]
CUDA_ONLY = ["lstm_triton", "ln_lstm_triton", "ln_gru_triton", "ln_lstm_triton_launches"]
#: issue 14's scaling sweep: H at B32 T256 (I = H), then B at H256
SWEEP_SIZES = ([f"B32,T256,I{h},H{h}" for h in (64, 128, 256, 512, 1024)]
               + [f"B{b},T256,I256,H256" for b in (1, 8, 64)])
SWEEP_CASES = ["torch_lstm", "lstm_fast", "ln_lstm_fast", "zoneout_fast", "torch_gru", "ln_gru_fast"]


def step_fn(layer: nn.Module, x: torch.Tensor, python_steps: bool = False, launches: bool = False
            ) -> Callable[[], None]:
    def run() -> None:
        if launches:  # the Triton loops as plain launches, not replayed from CUDA graphs
            os.environ["RNNKIT_CUDA_GRAPHS"] = "0"
        try:
            if python_steps:
                with python_loops():
                    out, _ = layer(x)
            else:
                out, _ = layer(x)
            out.sum().backward()
        finally:
            os.environ.pop("RNNKIT_CUDA_GRAPHS", None)
        if x.is_cuda:
            torch.cuda.synchronize()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=None,
                        help="B,T,I,H per size (default: B32,T256,I256,H256 and B8,T2048,I128,H128)")
    parser.add_argument("--cases", nargs="+", default=None, choices=list(CASES))
    parser.add_argument("--sweep", action="store_true", help=f"sizes {' '.join(SWEEP_SIZES)}; cases "
                        f"{' '.join(SWEEP_CASES)} (unless --sizes/--cases say otherwise)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda adds the Triton cases)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.sizes = args.sizes or (SWEEP_SIZES if args.sweep else ["B32,T256,I256,H256", "B8,T2048,I128,H128"])
    args.cases = args.cases or (SWEEP_CASES if args.sweep else DEFAULT)
    chosen = args.cases + ([c for c in CUDA_ONLY if c not in args.cases] if args.device == "cuda" else [])
    cases = ["torch_lstm"] + [c for c in chosen if c != "torch_lstm"]
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}; median of {args.repeats}, fwd+bwd, "
          "ratio = case / torch.nn.LSTM in the same run")
    if native_ops() is not None:
        print(f"C++ step loops: ready in {BUILD['seconds']:.1f} s (a build, or a load of an earlier one)")
    else:
        print(f"C++ step loops: not used ({BUILD['error']})")
    summary: dict[str, dict[str, float]] = {}
    for size in args.sizes:
        B, T, I, H = parse_size(size)
        torch.manual_seed(0)
        x = torch.randn(T, B, I, device=args.device)
        layers = {name: CASES[name][1](I, H).to(args.device).train() for name in cases}
        labels = {
            name: f"{CASES[name][0]} [{layer.explain(x).name if hasattr(layer, 'explain') else 'vendor'}]"
            for name, layer in layers.items()
        }
        times = time_interleaved({name: step_fn(layer, x, name.endswith("_pysteps"), name.endswith("_launches"))
                                  for name, layer in layers.items()}, args.repeats)
        anchor = times["torch_lstm"]
        print(f"\n{size}")
        print(f"  {'case':<54}{'ms':>9}{'x LSTM':>8}")
        for name in cases:
            print(f"  {labels[name]:<54}{times[name] * 1e3:>9.1f}{times[name] / anchor:>8.2f}", flush=True)
        summary[size] = {name: times[name] / anchor for name in cases}
        if "torch_gru" in times:
            summary[size] |= {f"{name}/GRU": times[name] / times["torch_gru"] for name in cases if "gru" in name
                              and name != "torch_gru"}
    if len(summary) > 1:  # one line per size, to read how each ratio moves with the size
        columns = list(next(iter(summary.values())))[1:]
        print("\nratios (x torch.nn.LSTM; '/GRU': x torch.nn.GRU)")
        print(f"  {'size':<22}" + "".join(f"{c:>16}" for c in columns))
        for size, row in summary.items():
            print(f"  {size:<22}" + "".join(f"{row.get(c, float('nan')):>16.2f}" for c in columns))


if __name__ == "__main__":
    main()
