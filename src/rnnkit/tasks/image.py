"""Image classification, both of the guide's ways (Fashion-MNIST, Xiao et al. 2017).

* many-to-one over rows: an image ``(H, W)`` is a sequence of ``H`` rows of ``W`` pixels, read by
  a recurrent layer whose last output is classified (the classic row-by-row RNN classifier);
* one-to-one: a small CNN encodes the image into one vector, which goes through a single
  recurrent step (:class:`rnnkit.OneToOne`) into the classifier.

Both are trained side by side on the same batches (the loss is the sum of theirs). The headline
``accuracy`` is the row model's, on the official 10,000 test images; ``one_to_one_accuracy`` is
the CNN + one step's. Baselines on the same test set: logistic regression on the 784 pixels
(scikit-learn, trained on the same training images) and the majority class. Reference: the
Fashion-MNIST benchmark lists a GRU over rows at 0.888-0.897 test accuracy.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.data.images import FASHION_CLASSES, FASHION_MNIST, fashion_mnist, load_gray
from rnnkit.data.readers import DataError, read_table
from rnnkit.data.text import split_three
from rnnkit.models import OneToOne, RecurrentConfig, SequenceClassifier
from rnnkit.tasks.base import Prepared, Task, TaskConfig, register
from rnnkit.tasks.plots import plot_confusion

__all__ = ["ImageModel", "ImageTask"]

SIZE = (28, 28)
VAL = 5000  # the last training images: validation


class ImageModel(nn.Module):
    """``forward(images (B, H, W)) -> logits (B, K)`` by the row model; :meth:`one_to_one` by the
    CNN + one recurrent step. ``rows`` reads ``H`` steps of ``W`` pixels."""

    def __init__(self, num_classes: int, size: tuple[int, int], config: RecurrentConfig, features: int = 128) -> None:
        super().__init__()
        H, W = size
        self.rows = SequenceClassifier(num_classes, config, input_size=W)
        self.cnn = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * (H // 4) * (W // 4), features), nn.ReLU(),
        )
        self.step = OneToOne(features, num_classes, config)

    def forward(self, images: Tensor) -> Tensor:
        return self.rows(images)  # (B, H, W): H steps

    def one_to_one(self, images: Tensor) -> Tensor:
        return self.step(self.cnn(images.unsqueeze(1)))


@register
class ImageTask(Task):
    name = "image"
    title = "classifying clothing images"
    topology = "many-to-one over rows (SequenceClassifier) and one-to-one (CNN + OneToOne)"
    dataset = FASHION_MNIST
    metric, higher_is_better, baseline = "accuracy", True, "logreg_accuracy"
    user_format = ("CSV/TSV with columns 'image' (path of an image file, relative to the CSV; read as grayscale, "
                   "resized to 28x28) and 'label' (any class names); split 80/10/10 by a seeded shuffle")
    predict_format = ("one image path per line (or a .npy array of the model's size), or the --data table's 'image' "
                      "column; prints LABEL<TAB>probability")
    input_column, target_column, input_is_path = "image", "label", True
    defaults = dict(cell="gru", hidden=128, epochs=4, batch_size=64, lr=5e-3)
    picture_name = "confusion.png"

    def prepare(self, cfg: TaskConfig) -> Prepared:
        if cfg.data:
            base = Path(cfg.data).parent
            rows = read_table(cfg.data, ["image", "label"])
            items = [(load_gray(base / row["image"], (cfg.data, line)), row["label"]) for line, row in rows]
            labels = sorted({label for _, label in items})
            if len(labels) < 2:
                raise DataError(cfg.data, None, f"needs at least 2 classes in column 'label', found {labels}")
            index = {label: i for i, label in enumerate(labels)}
            items = [(im, index[label]) for im, label in items]
            train, val, test = split_three(items, seed=cfg.seed)
        else:
            x, y = fashion_mnist("train")
            xt, yt = fashion_mnist("test")
            pairs = list(zip(x, y.tolist(), strict=True))
            train, val = pairs[:-VAL], pairs[-VAL:]
            test = list(zip(xt, yt.tolist(), strict=True))
            labels = FASHION_CLASSES
        train = self.cap(cfg, train)
        return Prepared(train, val, test, {"labels": labels, "size": list(train[0][0].shape)})

    def collate(self, examples: list[Any], meta: dict[str, Any]) -> dict[str, Tensor]:
        x = torch.from_numpy(np.stack([im for im, _ in examples]))  # (B, H, W)
        return {"x": x, "y": torch.tensor([label for _, label in examples], dtype=torch.long)}

    def build(self, cfg: TaskConfig, meta: dict[str, Any]) -> nn.Module:
        rc = RecurrentConfig(cell=cfg.cell, hidden_size=cfg.hidden, num_layers=cfg.layers,
                             bidirectional=cfg.bidirectional)
        return ImageModel(len(meta["labels"]), tuple(meta["size"]), rc)

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        x, y = batch["x"], batch["y"]
        return F.cross_entropy(model(x), y) + F.cross_entropy(model.one_to_one(x), y)

    @torch.no_grad()
    def _scores(self, model: nn.Module, examples: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(row-model predictions, one-to-one predictions, labels)``."""
        rows, step = [], []
        for i in range(0, len(examples), 1024):
            x = torch.from_numpy(np.stack([im for im, _ in examples[i : i + 1024]]))
            rows.append(model(x).argmax(-1).numpy())
            step.append(model.one_to_one(x).argmax(-1).numpy())
        return np.concatenate(rows), np.concatenate(step), np.array([label for _, label in examples])

    def evaluate(self, model: nn.Module, examples: list[Any], meta: dict[str, Any]) -> dict[str, float]:
        rows, step, y = self._scores(model, examples)
        return {"accuracy": float((rows == y).mean()), "one_to_one_accuracy": float((step == y).mean())}

    def baselines(self, data: Prepared) -> dict[str, float]:
        from sklearn.linear_model import LogisticRegression

        x = np.stack([im.reshape(-1) for im, _ in data.train])
        y = np.array([label for _, label in data.train])
        xt = np.stack([im.reshape(-1) for im, _ in data.test])
        yt = np.array([label for _, label in data.test])
        clf = LogisticRegression(max_iter=200, C=0.1).fit(x, y)
        top = Counter(y.tolist()).most_common(1)[0][0]
        return {"logreg_accuracy": float((clf.predict(xt) == yt).mean()),
                "majority_accuracy": float((yt == top).mean())}

    @torch.no_grad()
    def predict(self, model: nn.Module, meta: dict[str, Any], lines: list[str]) -> list[str]:
        """Each input line is an image path (or a ``.npy`` array); prints the label and its probability."""
        size = tuple(meta["size"])
        images = []
        for i, line in enumerate(lines, 1):
            path = Path(line.strip())
            if path.suffix == ".npy":
                im = np.load(path, allow_pickle=False).astype(np.float32)
                if im.shape != size:
                    raise DataError("<input>", i, f"{path}: array of shape {im.shape}, the model reads {size}")
            else:
                im = load_gray(path, ("<input>", i), size)
            images.append(im)
        probs = model(torch.from_numpy(np.stack(images))).softmax(-1)
        return [f"{meta['labels'][int(p.argmax())]}\t{float(p.max()):.3f}" for p in probs]

    def picture(self, model: nn.Module, data: Prepared, path: Path) -> Path:
        rows, _, y = self._scores(model, data.test)
        k = len(data.meta["labels"])
        m = np.zeros((k, k), dtype=int)
        np.add.at(m, (y, rows), 1)
        return plot_confusion(m, data.meta["labels"], path,
                              f"{self.picture_title(data.meta)}: test confusion matrix (row model)")

    def onnx_bundle(self, model, meta):
        from rnnkit.onnx_graphs import OnnxBundle, OnnxGraph

        size = tuple(meta["size"])

        def example(batch: int, length: int):
            return (torch.rand(batch, *size, generator=torch.Generator().manual_seed(batch)),)

        graph = OnnxGraph("classify_image", _ImageProbabilities(model), example, ["image"], ["probabilities"],
                          {"image": {0: "batch"}, "probabilities": {0: "batch"}}, has_time=False)
        return OnnxBundle("image", [graph], {"labels": meta["labels"], "size": list(size)})


class _ImageProbabilities(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        return self.model(image).softmax(-1)
