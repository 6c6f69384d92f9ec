"""Pictures a person can read: titles, axis labels, colorbars on heat maps, log scales for values
that span decades, at least 800 px wide; a user's data titles its own pictures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import rnnkit.diagnostics.plots as dplots
import rnnkit.tasks.plots as tplots
from rnnkit.tasks import get_task
from rnnkit.tasks.runner import train_task


@pytest.fixture
def figures(monkeypatch):
    """Every figure the plot functions save, kept open for inspection (and still written)."""
    seen = []
    real = dplots.save_figure

    def keep(fig, path):
        seen.append(fig)
        fig.canvas.draw()
        return real(fig, path)

    monkeypatch.setattr(tplots, "save_figure", keep)
    monkeypatch.setattr(dplots, "save_figure", keep)
    return seen


def _width(path) -> int:
    with Image.open(path) as im:
        return im.size[0]


def test_confusion_matrix_is_wide_labelled_and_has_a_colorbar(tmp_path, figures):
    path = tplots.plot_confusion(np.array([[5, 1, 0], [2, 7, 1], [0, 0, 9]]), ["neg", "neu", "pos"],
                                 tmp_path / "c.png", "sentiment: test confusion matrix")
    (fig,) = figures
    main, bar = fig.axes  # the colorbar is the second axes
    assert main.get_xlabel() and main.get_ylabel() and main.get_title() and bar.get_ylabel() == "test examples"
    assert _width(path) >= 800


@pytest.mark.parametrize("n", [3, 40])
def test_heatmaps_have_a_colorbar_axis_labels_and_a_sane_width(tmp_path, figures, n):
    path = tplots.plot_heatmap(np.random.default_rng(0).random((4, n)), [str(i) for i in range(n)], list("abcd"),
                               tmp_path / "h.png", "attention", xlabel="source token", ylabel="generated token",
                               value="attention weight")
    main, bar = figures[0].axes
    assert (main.get_xlabel(), main.get_ylabel(), bar.get_ylabel()) == ("source token", "generated token",
                                                                         "attention weight")
    assert 800 <= _width(path) <= 20 * 110 + 1


def test_series_plots_label_both_axes(tmp_path, figures):
    path = tplots.plot_series(list(range(10)), {"truth": np.arange(10.0)}, tmp_path / "s.png", "t",
                              xlabel="year", ylabel="sunspot number")
    ax = figures[0].axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("year", "sunspot number") and _width(path) >= 800


def test_jacobian_norms_spanning_decades_are_drawn_on_a_log_scale(tmp_path, figures):
    dplots.plot_jacobian({"rnn": ([0, 1, 2], [0.01, 1.0, 30.0])}, tmp_path / "j.png", xlabel="t")
    dplots.plot_jacobian({"lstm": ([0, 1, 2], [0.9, 1.0, 1.1])}, tmp_path / "k.png", xlabel="t")
    assert [f.axes[0].get_yscale() for f in figures] == ["log", "linear"]


@pytest.mark.slow
def test_a_users_series_titles_its_own_pictures(tmp_path, figures):
    data = tmp_path / "shop_sales.csv"
    data.write_text("value\n" + "".join(f"{100 + 10 * np.sin(i / 2):.2f}\n" for i in range(80)))
    task = get_task("forecast")
    run = train_task(task, task.config(data=str(data), epochs=1, hidden=8, progress=False), tmp_path).run_dir
    assert json.loads((run / "config.json").read_text())["meta"]["data_name"] == "shop_sales.csv"
    titles = [ax.get_title() for f in figures for ax in f.axes if ax.get_title()]
    assert titles and all("shop_sales.csv" in t and "sunspot" not in t for t in titles), titles
    assert all(_width(p) >= 800 for p in run.glob("*.png"))
