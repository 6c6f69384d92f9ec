"""Image captioning (one-to-many): a CNN encoder and an RNN decoder (Vinyals et al., "Show and
tell", CVPR 2015).

Data: scikit-learn's bundled handwritten digits (8x8, real scans). A picture holds one to three
digits side by side on an 8x24 canvas and its generated caption names them in order ("three
digits seven one four"); the digit images are split 60/20/20 *before* composing, so every test
picture is made of images never seen in training. Model: a two-layer CNN gives a feature vector
that sets the initial state of :class:`rnnkit.Generator`. Metric: exact caption match (greedy
decoding) on held-out pictures, and word accuracy; baseline on the same pictures: the most
frequent training caption.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.data.bundled import DIGITS, digits
from rnnkit.data.collate import pad
from rnnkit.data.images import load_gray
from rnnkit.data.readers import DataError, read_table
from rnnkit.data.speech import DIGIT_WORDS
from rnnkit.data.text import split_three
from rnnkit.data.vocab import Vocab
from rnnkit.models import Generator, RecurrentConfig
from rnnkit.tasks.base import Prepared, Task, TaskConfig, register
from rnnkit.tasks.plots import plt, save_figure

__all__ = ["CaptionModel", "CaptionTask"]

COUNTS = ["one digit", "two digits", "three digits"]
USER_SIZE = (32, 32)


class _Encode(nn.Module):
    def __init__(self, cnn: nn.Module) -> None:
        super().__init__()
        self.cnn = cnn

    def forward(self, images: Tensor) -> Tensor:
        return self.cnn(images.unsqueeze(1))


class CaptionModel(nn.Module):
    """``forward(images (B, H, W), tgt (B, T)) -> logits (B, T, V)``; ``generate(images)``."""

    def __init__(self, vocab_size: int, size: tuple[int, int], config: RecurrentConfig, embedding_dim: int,
                 features: int = 128) -> None:
        super().__init__()
        H, W = size
        self.cnn = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * (H // 2) * (W // 2), features),
            nn.LayerNorm(features),  # keeps the decoder's tanh(W c) initial state out of saturation
        )
        self.decoder = Generator(vocab_size, features, config, embedding_dim=embedding_dim)

    def encode(self, images: Tensor) -> Tensor:
        return self.cnn(images.unsqueeze(1))  # (B, 1, H, W) -> (B, C)

    @property
    def encode_module(self) -> nn.Module:
        """:meth:`encode` as a module (for the ONNX init graph)."""
        return _Encode(self.cnn)

    def forward(self, images: Tensor, tgt: Tensor) -> Tensor:
        return self.decoder(self.encode(images), tgt)

    @torch.no_grad()
    def generate(self, images: Tensor, max_len: int = 8):
        return self.decoder.generate(self.encode(images), max_len)


def _compose(images: np.ndarray, labels: np.ndarray, n: int, rng: random.Random) -> list[tuple[np.ndarray, list[str]]]:
    out = []
    for _ in range(n):
        k = rng.randint(1, 3)
        idx = [rng.randrange(len(images)) for _ in range(k)]
        canvas = np.zeros((8, 24), dtype=np.float32)
        for j, i in enumerate(idx):
            canvas[:, 8 * j : 8 * j + 8] = images[i]
        out.append((canvas, [*COUNTS[k - 1].split(), *(DIGIT_WORDS[labels[i]] for i in idx)]))
    return out


@register
class CaptionTask(Task):
    name = "caption"
    title = "captioning handwritten digits"
    topology = "one-to-many (CNN + Generator)"
    dataset = DIGITS
    metric, higher_is_better, baseline = "exact_match", True, "majority_exact_match"
    user_format = ("CSV/TSV with columns 'image' (path of an image file, relative to the CSV; read as grayscale, "
                   "resized to 32x32) and 'caption' (space-separated words); split 80/10/10 by a seeded shuffle")
    predict_format = "one image path per line, or the --data table's 'image' column; prints the caption"
    input_column, target_column, input_is_path = "image", "caption", True
    defaults = dict(hidden=128, embedding=32, epochs=10, batch_size=32, lr=3e-3, max_train=4000)
    picture_name = "captions.png"

    def prepare(self, cfg: TaskConfig) -> Prepared:
        if cfg.data:
            base = Path(cfg.data).parent
            items = [(load_gray(base / row["image"], (cfg.data, line), USER_SIZE), row["caption"].lower().split())
                     for line, row in read_table(cfg.data, ["image", "caption"])]
            train, val, test = split_three(items, seed=cfg.seed)
            train = self.cap(cfg, train)
        else:
            images, labels = digits()
            order = np.random.default_rng(cfg.seed).permutation(len(images))
            cut1, cut2 = int(0.6 * len(order)), int(0.8 * len(order))
            rng = random.Random(cfg.seed)
            pools = [order[:cut1], order[cut1:cut2], order[cut2:]]
            train, val, test = (_compose(images[p], labels[p], n, rng)
                                for p, n in zip(pools, (cfg.max_train or 4000, 300, 500), strict=True))
        if not train:
            raise DataError(cfg.data or "digits", None, "no training pictures")
        vocab = Vocab.build(c for _, c in train)
        return Prepared(train, val, test, {"vocab": vocab.to_dict(), "size": list(train[0][0].shape)})

    def collate(self, examples: list[Any], meta: dict[str, Any]) -> dict[str, Tensor]:
        vocab = Vocab.from_dict(meta["vocab"])
        x = torch.from_numpy(np.stack([im for im, _ in examples]))  # (B, H, W)
        y, lengths = pad([vocab.encode(c, eos=True) for _, c in examples])
        return {"x": x, "y": y, "lengths": lengths}

    def build(self, cfg: TaskConfig, meta: dict[str, Any]) -> nn.Module:
        rc = RecurrentConfig(cell=cfg.cell, hidden_size=cfg.hidden, num_layers=cfg.layers)
        return CaptionModel(len(meta["vocab"]["itos"]), tuple(meta["size"]), rc, cfg.embedding)

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        logits = model(batch["x"], batch["y"])
        return F.cross_entropy(logits.flatten(0, 1), batch["y"].flatten(), ignore_index=0)

    @torch.no_grad()
    def caption(self, model: nn.Module, images: list[np.ndarray], meta: dict[str, Any]) -> list[list[str]]:
        vocab = Vocab.from_dict(meta["vocab"])
        out = []
        for i in range(0, len(images), 256):
            dec = model.generate(torch.from_numpy(np.stack(images[i : i + 256])), max_len=12)
            out += [vocab.decode(row) for row in dec.tokens.tolist()]
        return out

    def evaluate(self, model: nn.Module, examples: list[Any], meta: dict[str, Any]) -> dict[str, float]:
        pred = self.caption(model, [im for im, _ in examples], meta)
        gold = [c for _, c in examples]
        words = [a == b for p, g in zip(pred, gold, strict=True) for a, b in zip(p + [""] * len(g), g, strict=False)]
        return {"exact_match": float(np.mean([p == g for p, g in zip(pred, gold, strict=True)])),
                "word_accuracy": float(np.mean(words))}

    def baselines(self, data: Prepared) -> dict[str, float]:
        top = Counter(tuple(c) for _, c in data.train).most_common(1)[0][0]
        return {"majority_exact_match": float(np.mean([tuple(c) == top for _, c in data.test]))}

    def predict(self, model: nn.Module, meta: dict[str, Any], lines: list[str]) -> list[str]:
        """Each input line is an image path (grayscale, resized to the model's size); prints a caption."""
        size = tuple(meta["size"])
        images = []
        for i, line in enumerate(lines, 1):
            if line.strip():
                im = load_gray(Path(line.strip()), ("<input>", i), USER_SIZE)
                if im.shape != size:
                    from PIL import Image

                    im = np.asarray(Image.fromarray((im * 255).astype(np.uint8)).resize(size[::-1]),
                                    dtype=np.float32) / 255.0
                images.append(im)
        return [" ".join(c) for c in self.caption(model, images, meta)]

    def picture(self, model: nn.Module, data: Prepared, path: Path) -> Path:
        shown = data.test[:8]
        pred = self.caption(model, [im for im, _ in shown], data.meta)
        fig, axes = plt.subplots(4, 2, figsize=(8, 5))
        for ax, (im, gold), p in zip(axes.flat, shown, pred, strict=True):
            ax.imshow(im, cmap="gray_r")
            ax.set_title(("" if p == gold else "x ") + " ".join(p), fontsize=8, color="k" if p == gold else "r")
            ax.axis("off")
        fig.suptitle(f"{self.picture_title(data.meta)}: generated captions on held-out pictures")
        return save_figure(fig, path)

    def onnx_bundle(self, model, meta):
        from rnnkit.onnx_graphs import generator_bundle

        size = tuple(meta["size"])
        g = torch.Generator().manual_seed(0)
        return generator_bundle(model.decoder, lambda b: torch.rand(b, *size, generator=g), "image",
                                {"vocab": meta["vocab"]["itos"], "size": list(size), "joiner": " ", "max_len": 12},
                                encode=model.encode_module, kind="caption")
