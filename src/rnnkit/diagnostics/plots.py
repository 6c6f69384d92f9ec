"""PNG plots of the gradient-flow diagnostics (matplotlib, Agg backend: no display needed).

Each function takes plain data (lists, dicts, numpy arrays) and a path, writes one PNG and
returns the path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

from rnnkit._files import atomic_path

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

__all__ = ["save_figure", "plot_distance_curves", "plot_jacobian", "plot_layer_norms", "plot_loss_curves"]


#: the narrowest picture written, in pixels
MIN_WIDTH = 800


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG at least :data:`MIN_WIDTH` pixels wide (110 dpi, or more for a small figure)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fig.get_layout_engine() is None:  # a figure laid out by its own engine (constrained) keeps it
        fig.tight_layout()
    try:
        with atomic_path(path) as tmp:  # never half a picture
            fig.savefig(tmp, dpi=max(110.0, MIN_WIDTH / fig.get_figwidth()), format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path


def _log_if_wide(ax, values) -> None:
    """Log scale for positive values spanning more than a decade (a linear axis flattens them)."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size and (v > 0).all() and v.max() / v.min() > 10:
        ax.set_yscale("log")


def plot_distance_curves(
    curves: Mapping[str, Sequence[float]], path: str | os.PathLike, *, title: str = "",
    dashed: Mapping[str, Sequence[float]] | None = None, normalise: bool = True,
) -> Path:
    """``||dL/dh_t||`` against the distance ``T-1-t`` from the loss, log scale, one line per
    label (``curves[label][d]`` at distance d). ``dashed``: more curves (e.g. at initialisation)
    drawn dashed in the same colour. ``normalise`` divides each curve by its value at d = 0."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {}
    for label, values in curves.items():
        v = _norm(values, normalise)
        (line,) = ax.plot(np.arange(len(v)), v, label=f"{label}")
        colours[label] = line.get_color()
    for label, values in (dashed or {}).items():
        v = _norm(values, normalise)
        ax.plot(np.arange(len(v)), v, "--", color=colours.get(label), alpha=0.7, label=f"{label} (init)")
    ax.set_yscale("log")
    ax.set_xlabel("distance from the loss, T - 1 - t (steps)")
    ax.set_ylabel("||dL/dh_t||" + (" / ||dL/dh_{T-1}||" if normalise else ""))
    ax.set_title(title or "How far back the gradient reaches")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _norm(values: Sequence[float], normalise: bool) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    v = np.where(v > 0, v, np.nan)  # log scale: an exact zero is drawn as a gap
    if normalise and len(v) and np.isfinite(v[0]) and v[0] > 0:
        v = v / v[0]
    return v


def plot_layer_norms(
    history: Sequence[tuple[int, Mapping[str, float]]], path: str | os.PathLike, *, title: str = "",
    smooth: int = 1,
) -> Path:
    """Per-layer gradient norm against the optimizer step (log scale), one line per layer;
    ``smooth > 1`` draws the running geometric mean over that many records."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    layers = sorted({k for _, norms in history for k in norms})
    steps = [s for s, _ in history]
    styles = ["-", "--", ":", "-."]
    for k, layer in enumerate(layers):
        v = np.log(np.asarray([norms.get(layer, np.nan) for _, norms in history], dtype=np.float64))
        if smooth > 1 and len(v) >= smooth:
            v = np.convolve(v, np.ones(smooth) / smooth, mode="same")
        ax.plot(steps, np.exp(v), styles[(k // 10) % len(styles)], label=layer)
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("||dL/dθ_layer||")
    ax.set_title(title or "Gradient norm per layer")
    ax.grid(True, which="both", alpha=0.3)
    if layers:
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_jacobian(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | os.PathLike, *, xlabel: str,
    title: str = "", dashed: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
) -> Path:
    """Estimated recurrent Jacobian spectral norm: ``series[label] = (x, sigma)``; a line at 1."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {}
    for label, (x, y) in series.items():
        (line,) = ax.plot(x, y, label=label)
        colours[label] = line.get_color()
    for label, (x, y) in (dashed or {}).items():
        ax.plot(x, y, "--", color=colours.get(label), alpha=0.7, label=f"{label} (init)")
    ax.axhline(1.0, color="grey", lw=0.8)
    _log_if_wide(ax, [y for _, ys in [*series.values(), *(dashed or {}).values()] for y in ys])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("||d s_t / d s_{t-1}||_2 (estimate)")
    ax.set_title(title or "Recurrent Jacobian spectral norm")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_loss_curves(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | os.PathLike, *, title: str = "",
    hlines: Mapping[str, float] | None = None, ylabel: str = "validation MSE",
) -> Path:
    """Loss against step per label (log scale), with labelled horizontal reference lines."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (x, y) in series.items():
        ax.plot(x, y, marker=".", label=label)
    for label, value in (hlines or {}).items():
        ax.axhline(value, ls=":", color="grey")
        ax.annotate(label, (0, value), xycoords=("axes fraction", "data"), fontsize=7, va="bottom")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
