"""Pictures for the run directory: learning curves, confusion matrices, heat maps, series."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rnnkit.diagnostics.plots import save_figure  # noqa: E402

__all__ = ["plot_confusion", "plot_frames", "plot_heatmap", "plot_learning_curve", "plot_series"]


def plot_learning_curve(history: str | Path, path: str | Path, title: str = "") -> Path:
    """Train loss per logged step and validation loss per validation, from Lightning's CSV."""
    train, val = [], []
    with open(history) as f:
        for row in csv.DictReader(f):
            step = int(row.get("step") or 0)
            if row.get("train_loss"):
                train.append((step, float(row["train_loss"])))
            if row.get("val_loss"):
                val.append((step, float(row["val_loss"])))
    fig, ax = plt.subplots(figsize=(8, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", alpha=0.7)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (the task's training objective)")
    positive = [v for _, v in train + val if v > 0]
    if positive and len(positive) == len(train) + len(val) and max(positive) / min(positive) > 30:
        ax.set_yscale("log")  # spans more than a decade and a half
    ax.set_title(f"learning curve: {title}")
    ax.legend()
    return save_figure(fig, path)


def plot_confusion(matrix: np.ndarray, labels: Sequence[str], path: str | Path, title: str) -> Path:
    """Counts of (true, predicted) labels, with a colorbar; at least 800 px wide."""
    k = len(labels)
    fig, ax = plt.subplots(figsize=(max(7.5, 2.5 + 0.5 * k), max(6.0, 1.5 + 0.5 * k)))
    im = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(im, ax=ax, label="test examples")
    ax.set_xticks(range(k), labels, rotation=60, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    top = matrix.max() if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=9,
                    color="white" if top and matrix[i, j] > top / 2 else "black")
    ax.set_title(title)
    return save_figure(fig, path)


def plot_heatmap(weights: np.ndarray, xlabels: Sequence[str], ylabels: Sequence[str], path: str | Path,
                 title: str, *, xlabel: str = "", ylabel: str = "", value: str = "weight") -> Path:
    """E.g. attention: rows = output steps, columns = input steps; a colorbar names ``value``."""
    width = min(20.0, max(8.0, 2.5 + 0.35 * len(xlabels)))
    fig, ax = plt.subplots(figsize=(width, min(14.0, max(4.0, 1.5 + 0.35 * len(ylabels)))))
    im = ax.imshow(weights, cmap="viridis", aspect="auto")
    fig.colorbar(im, ax=ax, label=value)
    ax.set_xticks(range(len(xlabels)), xlabels, rotation=90)
    ax.set_yticks(range(len(ylabels)), ylabels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return save_figure(fig, path)


def plot_series(x: Sequence[float], series: dict[str, Sequence[float]], path: str | Path, title: str,
                xlabel: str = "", ylabel: str = "") -> Path:
    fig, ax = plt.subplots(figsize=(9, 4))
    for name, ys in series.items():
        ax.plot(x[-len(ys):], ys, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_frames(rows: Sequence[np.ndarray], row_labels: Sequence[str], column_labels: Sequence[str],
                path: str | Path, title: str) -> Path:
    """Rows of grayscale frames ``(T, H, W)`` in [0, 1] side by side (e.g. true and predicted),
    one labelled row each, with a colorbar of the pixel value."""
    n, t = len(rows), len(column_labels)
    fig, axes = plt.subplots(n, t, figsize=(max(8.0, 1.2 * t + 1.5), 1.3 * n + 1.0), squeeze=False,
                             layout="constrained")
    im = None
    for r, (frames, label) in enumerate(zip(rows, row_labels, strict=True)):
        for c in range(t):
            ax = axes[r, c]
            im = ax.imshow(frames[c], cmap="gray", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(column_labels[c], fontsize=9)
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.colorbar(im, ax=axes, shrink=0.9, label="pixel value")
    fig.suptitle(title)
    return save_figure(fig, path)
