"""Training throughput of the chars task on a plain text: each line an example (what a plain-text
``--data`` file was before it became one stream) against one continuous stream in truncated-BPTT
windows, the same model, side by side in one run.

Both read Shakespeare (``rnnkit.data.shakespeare``; ``bash scripts/setup_data.sh`` fetches it):
the line form through a one-column CSV of the same lines (a table is still read one example per
row), the stream form from the text itself. Throughput counts the training split's predicted
characters (no padding) per second of one epoch through the trainer, end to end (a 2-epoch run
minus a 1-epoch run), and per second of the training steps alone; the ratio is stream / lines.

    python benchmarks/lm_throughput.py                          # the chars defaults: LSTM 128, batch 32
    python benchmarks/lm_throughput.py --hidden 512 --layers 2 --batch-size 64
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import torch

from rnnkit.data.shakespeare import shakespeare_text
from rnnkit.tasks import get_task
from rnnkit.tasks.runner import train_task
from rnnkit.tasks_cli import quiet


def epoch_seconds(task, cfg, out: str) -> float:
    """Wall seconds of one training epoch through the trainer (``rnnkit train``): a 2-epoch run
    minus a 1-epoch run, so that reading the data, the baselines and the test cancel out."""
    took = []
    for epochs in (1, 2):
        start = time.perf_counter()
        train_task(task, task.config(**{**cfg, "epochs": epochs}), out, f"tp-{epochs}", overwrite=True,
                   echo=lambda m: None)
        took.append(time.perf_counter() - start)
    return took[1] - took[0]


def step_rate(task, cfg: dict) -> float:
    """Predicted characters per second of the training steps alone (loss, backward, clipping,
    Adam) over one epoch: the model's own speed, without the trainer around it."""
    cfg = task.config(**cfg)
    data = task.prepare(cfg)
    torch.manual_seed(0)
    model = task.build(cfg, data.meta).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    chars = seconds = 0.0
    for i, idx in enumerate(task.batch_sampler(data.train, cfg.batch_size, train=True, seed=0)):
        batch = task.collate([data.train[j] for j in idx], data.meta)
        start = time.perf_counter()
        loss = task.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        if i >= 2:  # warm-up: the first batches build buffers and the C++ loops
            seconds += time.perf_counter() - start
            chars += int((batch["y"] != 0).sum()) if "reset" not in batch else batch["y"].numel()
    return chars / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--embedding", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bptt", type=int, default=128)
    args = parser.parse_args()
    quiet()
    task = get_task("chars")
    text = shakespeare_text()
    options = dict(hidden=args.hidden, layers=args.layers, embedding=args.embedding, batch_size=args.batch_size,
                   progress=False, max_train=0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; chars task, {options}")
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "lines.csv"
        with table.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text"])
            writer.writerows([line] for line in text.read_text().split("\n") if line.strip())
        rates = {}
        for form, data in (("lines", table), ("stream", text)):
            cfg = dict(options, data=str(data), bptt=args.bptt)
            chars = task.prepare(task.config(**cfg)).meta.get("characters", [0])[0] or lines_chars(table)
            steps = step_rate(task, cfg)
            wall = epoch_seconds(task, cfg, tmp)
            rates[form] = chars / wall
            print(f"  {form:<7} one epoch {wall:6.1f} s: {rates[form]:>9,.0f} chars/s end to end; "
                  f"training steps alone {steps:>9,.0f} chars/s", flush=True)
    print(f"stream / lines, end to end: {rates['stream'] / rates['lines']:.2f}x")


def lines_chars(table: Path) -> int:
    """Predicted characters of a one-example-per-row table's training split (each row + its end)."""
    task = get_task("chars")
    data = task.prepare(task.config(data=str(table)))
    return sum(min(len(toks), task.max_len) + 1 for _, toks in data.train)


if __name__ == "__main__":
    main()
