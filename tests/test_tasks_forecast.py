"""Forecasting sunspots beats naive and seasonal-naive on the held-out last 30 years; the run
directory and the CLI round trip (train, evaluate, predict, export) on a user CSV."""

import json

import numpy as np
import pytest

from _task_helpers import assert_beats, train_small
from rnnkit.tasks.forecast import autoregression, seasonal_period
from rnnkit.tasks_cli import main


def test_seasonal_period_finds_the_cycle():
    t = np.arange(300)
    assert seasonal_period(np.sin(2 * np.pi * t / 11) + 0.1 * np.cos(t)) == 11


def test_seasonal_period_of_a_monthly_series_with_a_yearly_cycle_is_12():
    """Mauna Loa CO2 (statsmodels' copy), monthly means: a trend plus a 12-month cycle. The largest
    autocorrelation at any lag is at lag 2 on such a smooth series; the highest peak is at 12."""
    sm = pytest.importorskip("statsmodels.api")
    monthly = sm.datasets.co2.load_pandas().data["co2"].resample("MS").mean().interpolate().to_numpy()
    assert seasonal_period(monthly[:300]) == 12


def _series_file(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _values(n=60):
    return [f"{50 + 10 * np.sin(i / 3):.3f}" for i in range(n)]


@pytest.mark.parametrize(("name", "header", "bad", "column"), [
    ("s.csv", ["value"], "nan", "'value'"), ("s.csv", ["value"], "", "'value'"), ("s.csv", ["value"], "inf", "'value'"),
    ("s.txt", [], "", "1"), ("s.txt", [], "NaN", "1"),
])
def test_a_missing_value_names_file_line_and_column(tmp_path, capsys, name, header, bad, column):
    values = _values()
    values[20] = bad
    path = _series_file(tmp_path, name, header + values)
    assert main(["train", "forecast", "--data", str(path), "--epochs", "1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    line = 21 + len(header)
    assert f"{path}, line {line}: column {column}: missing value" in err and "--missing interpolate" in err
    assert "Traceback" not in err


def test_missing_values_interpolated_on_request_and_the_period_given(tmp_path):
    from rnnkit.tasks import get_task

    values = _values()
    values[20] = ""
    path = _series_file(tmp_path, "s.txt", values + ["", ""])  # trailing blank lines are not values
    task = get_task("forecast")
    data = task.prepare(task.config(data=str(path), missing="interpolate", period=7))
    series = data.meta["series"]
    assert len(series) == 60 and series[20] == pytest.approx((float(values[19]) + float(values[21])) / 2)
    assert data.meta["period"] == 7


@pytest.mark.slow
def test_forecast_beats_naive_on_held_out_years(tmp_path):
    task, result = train_small(tmp_path, "forecast", epochs=30)
    assert_beats(task, result, margin=3.0)  # MAE in sunspot units; naive is ~24
    assert result.metrics["mae"] < result.baselines["seasonal_naive_mae"] - 3.0
    assert result.data.test == list(range(279, 309))  # 1979-2008
    # the autoregression baseline: AIC picks Tong's AR(9) on 1700-1938; statsmodels' MLE fit gives 13.86
    assert result.baselines["ar_order"] == 9 and 13.0 < result.baselines["ar_mae"] < 15.0
    run = result.run_dir
    for name in ("config.json", "weights.safetensors", "metrics.csv", "history.csv", "learning_curve.png",
                 "forecast.png"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "config.json").read_text())
    assert saved["metrics"]["mae"] == pytest.approx(result.metrics["mae"])


@pytest.mark.slow
def test_cli_round_trip_on_a_user_csv(tmp_path, capsys):
    t = np.arange(160)
    values = 50 + 40 * np.sin(2 * np.pi * t / 12) + np.random.default_rng(0).normal(0, 3, len(t))
    data = tmp_path / "series.csv"
    data.write_text("value\n" + "\n".join(f"{v:.3f}" for v in values) + "\n")
    assert main(["train", "forecast", "--data", str(data), "--epochs", "3", "--no-progress", "--out",
                 str(tmp_path), "--name", "mine"]) == 0
    run = tmp_path / "mine"
    assert "forecast: mae =" in capsys.readouterr().out
    assert main(["evaluate", str(run)]) == 0
    history = tmp_path / "history.txt"
    history.write_text("\n".join(f"{v:.3f}" for v in values[:40]))
    assert main(["predict", str(run), str(history)]) == 0
    assert main(["export", str(run)]) == 0
    out = capsys.readouterr().out
    steps = [x.split("\t")[0] for x in out.splitlines() if "\t" in x]
    assert steps == ["+1", "+2", "+3", "+4", "+5"]  # the next 5 values, each saying which step it is
    assert "onnxruntime matches PyTorch" in out


def test_cli_reports_bad_user_file(tmp_path, capsys):
    data = tmp_path / "series.csv"
    data.write_text("value\n1\n2\nthree\n")
    assert main(["train", "forecast", "--data", str(data), "--no-progress", "--out", str(tmp_path)]) == 2
    assert f"{data}, line 4: column 'value': value 'three' is not a number" in capsys.readouterr().err


def test_autoregression_recovers_an_ar2_process():
    """On a simulated AR(2), the baseline's one-step forecasts are the true predictor's, to within
    the estimation error, and AIC picks an order of at least 2."""
    rng = np.random.default_rng(0)
    y = np.zeros(1200)
    for t in range(2, len(y)):
        y[t] = 5.0 + 1.2 * y[t - 1] - 0.5 * y[t - 2] + rng.normal()
    idx = np.arange(1000, 1200)
    pred, order = autoregression(y, 1000, idx)
    truth = 5.0 + 1.2 * y[idx - 1] - 0.5 * y[idx - 2]
    assert 2 <= order <= 20
    assert np.abs(pred - truth).max() < 0.3  # noise sd 1: estimation error only
    assert autoregression(np.ones(50), 40, np.arange(40, 50)) is None  # constant: nothing to fit
