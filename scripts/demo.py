"""The demo: an Elman RNN and an LSTM learn to remember, side by side.

Task ("first-symbol recall"): a sequence of T random symbols out of K, one-hot, with an extra
channel that marks step 0; the label is the first symbol. The answer sits T steps back, so the
gradient must travel T steps through the recurrence (Bengio et al. 1994; Hochreiter &
Schmidhuber 1997). Chance accuracy is 1/K. At the default T=20 both cells can get there; raise
``--length`` to watch them part (``rnnkit diagnose`` measures the gradient itself).

    python scripts/demo.py [--steps 1000] [--length 20]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import rnnkit


def batch(n: int, length: int, symbols: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(symbols, (n, length), generator=generator)
    x = torch.zeros(n, length, symbols + 1)
    x[..., :symbols] = nn.functional.one_hot(tokens, symbols).float()
    x[:, 0, symbols] = 1.0  # the marker: remember this one
    return x, tokens[:, 0]  # (n, T, K + 1), (n,)


class Recall(nn.Module):
    def __init__(self, cell: str, symbols: int, hidden: int) -> None:
        super().__init__()
        self.rnn = rnnkit.Recurrent(rnnkit.make_cell(cell, symbols + 1, hidden))
        if cell == "lstm":  # forget-gate bias 1 (Gers et al. 2000): remember by default
            with torch.no_grad():
                self.rnn.cells[0].bias_hh[hidden : 2 * hidden] += 1.0
        self.head = nn.Linear(hidden, symbols)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)  # (B, T, H)
        return self.head(out[:, -1])  # (B, K)


def train(cell: str, args: argparse.Namespace) -> tuple[float, float, float]:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model = Recall(cell, args.symbols, args.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        x, y = batch(64, args.length, args.symbols, gen)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % max(1, args.steps // 5) == 0:
            print(f"  {cell:<5} step {step:>4}/{args.steps}  loss {loss.item():.3f}", flush=True)
    x, y = batch(1000, args.length, args.symbols, torch.Generator().manual_seed(2))  # held out
    with torch.no_grad():
        logits = model(x)
    return nn.functional.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item(), (
        time.perf_counter() - start
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--length", type=int, default=20, help="T: how far back the answer is")
    parser.add_argument("--symbols", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()
    print(f"first-symbol recall, T={args.length}, {args.symbols} symbols (chance {1 / args.symbols:.0%})")
    results = {cell: train(cell, args) for cell in ("rnn", "lstm")}
    print(f"\n{'cell':<6}{'held-out loss':>14}{'accuracy':>10}{'seconds':>9}")
    for cell, (loss, acc, secs) in results.items():
        print(f"{cell:<6}{loss:>14.3f}{acc:>10.1%}{secs:>9.1f}")


if __name__ == "__main__":
    main()
