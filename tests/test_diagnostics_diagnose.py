"""``rnnkit diagnose``, shrunken: the command writes its report, and the measured curves show the
Elman RNN's gradient vanishing with distance faster than the LSTM's."""

import json

import pytest

pytest.importorskip("lightning")
pytest.importorskip("matplotlib")

from rnnkit.cli import main  # noqa: E402


@pytest.mark.slow
def test_diagnose_writes_the_report_and_shows_the_vanishing_gradient(tmp_path, capsys):
    out = tmp_path / "diag"
    code = main(["diagnose", "--cells", "rnn", "lstm", "--lengths", "40", "--steps", "30", "--hidden", "16",
                 "--batch", "16", "--eval-every", "15", "--eval-size", "64", "--probe-size", "32",
                 "--jacobian-points", "5", "--no-progress", "--threads", "1", "--out", str(out)])
    assert code == 0
    for name in ["report.md", "results.json", "gradflow_T40.png", "loss_T40.png", "jacobian_T40.png",
                 "grad_norms_T40.png"]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    assert "| rnn | 40 |" in report and "| lstm | 40 |" in report
    printed = capsys.readouterr().out
    assert "test MSE" in printed and "lstm" in printed

    results = {r["cell"]: r for r in json.loads((out / "results.json").read_text())["results"]}
    for when in ("grad_init", "grad_trained"):
        elman, lstm = results["rnn"][when], results["lstm"][when]
        assert len(elman) == len(lstm) == 40  # ||dL/dh|| at distances 0 .. T-1
        # what is left of the gradient at the first step, relative to the last
        assert elman[-1] / elman[0] < 1e-3 * (lstm[-1] / lstm[0]), when
    assert results["rnn"]["trained_steps"] == 30


def test_diagnose_rejects_an_unknown_cell(tmp_path, capsys):
    assert main(["diagnose", "--cells", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown cell(s) ['nope']" in capsys.readouterr().err
