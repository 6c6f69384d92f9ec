"""Runs a practitioner can trust: interrupted runs resume to the uninterrupted run's weights, damaged
runs are refused with one line, flags are checked when parsed, and a new run never mixes with an
old one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from rnnkit.cli import main
from rnnkit.tasks import get_task
from rnnkit.tasks.runner import read_status, train_task

SMALL = ["--epochs", "8", "--hidden", "16", "--no-progress"]


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    env.pop("RNNKIT_RUN_DIR", None)
    return subprocess.Popen([sys.executable, "-m", "rnnkit.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "weights.safetensors")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted CLI run of the forecast task, and what it printed."""
    out = tmp_path_factory.mktemp("ref")
    proc = _cli("train", "forecast", *SMALL, "--out", str(out), "--name", "ref")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    return out / "ref", stdout, stderr


@pytest.mark.slow
def test_training_is_quiet_by_default(reference):
    _, stdout, stderr = reference
    for noise in ("GPU available", "TPU available", "Tip:", "litlogger", "deprecated", "weights_only"):
        assert noise not in stdout + stderr, noise
    assert "forecast: mae = " in stdout


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["sigint", "sigterm", "sigkill"])
def test_interrupted_run_resumes_to_the_uninterrupted_weights(reference, tmp_path, how):
    ref, ref_out, _ = reference
    proc = _cli("train", "forecast", *SMALL, "--out", str(tmp_path), "--name", "run")
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(how)
    _, stderr = proc.communicate(timeout=120)
    run = tmp_path / "run"
    if how == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL and read_status(run)["status"] == "running"
    else:
        assert proc.returncode == 128 + how, stderr
        assert f"Resume with: rnnkit resume {run}" in stderr and "Traceback" not in stderr
        assert read_status(run)["status"] == "interrupted"
    assert not (run / "config.json").exists()  # no result was written for an unfinished run
    resumed = _cli("resume", str(run))
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert read_status(run)["status"] == "finished"
    want, got = _weights(ref), _weights(run)
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert (run / "metrics.csv").read_text() == (ref / "metrics.csv").read_text()
    assert stdout.splitlines()[0] == ref_out.splitlines()[0]  # the same result line


@pytest.mark.slow
def test_an_interrupted_stream_run_resumes_its_streams(tmp_path):
    """chars on a plain text (one stream, truncated BPTT): a run interrupted mid-epoch resumes with
    the state its streams had reached (kept in the checkpoint), to the uninterrupted run's weights."""
    text = tmp_path / "text.txt"
    words = "to be or not to be that is the question whether tis nobler in the mind".split()
    text.write_text("\n".join(" ".join(words[(i * 7 + j) % len(words)] for j in range(1 + i % 9))
                              for i in range(6000)) + "\n")
    args = ["train", "chars", "--data", str(text), "--epochs", "3", "--hidden", "16", "--embedding", "8",
            "--batch-size", "4", "--bptt", "16", "--no-progress", "--out", str(tmp_path)]
    ref = _cli(*args, "--name", "ref")
    _, stderr = ref.communicate(timeout=300)
    assert ref.returncode == 0, stderr
    proc = _cli(*args, "--name", "run")
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # into the next epoch: its streams carry a state
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, stderr
    from rnnkit.train.checkpoint import read_checkpoint

    assert read_checkpoint(last)["rnnkit"].get("task_state") is not None  # stopped mid-epoch, with the streams' state
    resumed = _cli("resume", str(tmp_path / "run"))
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    want, got = _weights(tmp_path / "ref"), _weights(tmp_path / "run")
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


# -- damaged runs ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    task = get_task("forecast")
    return train_task(task, task.config(epochs=1, hidden=8, progress=False), out).run_dir


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run_dir, tmp_path / "copy"))


def _corrupt_tensor_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header + 10 : header + 210] = os.urandom(200)
    path.write_bytes(bytes(data))


def _edit_hidden(path: Path) -> None:
    cfg = json.loads(path.read_text())
    cfg["config"]["hidden"] = 24
    path.write_text(json.dumps(cfg))


DAMAGE = {
    "random-bytes": ("weights.safetensors", _corrupt_tensor_bytes, "does not match"),
    "truncated": ("weights.safetensors", lambda p: p.write_bytes(p.read_bytes()[:100]), "does not match"),
    "foreign": ("weights.safetensors", lambda p: p.write_text("not weights"), "does not match"),
    "other-hidden": ("config.json", _edit_hidden, "shape mismatch"),
    "garbled-config": ("config.json", lambda p: p.write_text("{"), "not readable JSON"),
    "no-weights": ("weights.safetensors", lambda p: p.unlink(), "missing"),
    "no-checksum": ("config.json", lambda p: p.write_text(json.dumps({k: v for k, v in json.loads(p.read_text()).items()
                                                                        if k != "weights"})), "no checksum"),
}


@pytest.mark.slow
@pytest.mark.parametrize("command", ["evaluate", "predict", "export"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_run_is_refused_with_one_line(run_dir, tmp_path, capsys, command, damage):
    name, spoil, message = DAMAGE[damage]
    run = _copy(run_dir, tmp_path)
    spoil(run / name)
    args = [command, str(run)] + (["/dev/null"] if command == "predict" else [])
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and str(run / name) in err, err


@pytest.mark.slow
def test_the_weights_checksum_is_recorded_and_the_run_finished(run_dir):
    import hashlib

    recorded = json.loads((run_dir / "config.json").read_text())["weights"]["sha256"]
    assert recorded == hashlib.sha256((run_dir / "weights.safetensors").read_bytes()).hexdigest()
    assert read_status(run_dir)["status"] == "finished"
    assert json.loads((run_dir / "run.json").read_text())["task"] == "forecast"
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]  # no temporary file left behind


@pytest.mark.slow
def test_a_finished_run_is_not_resumed_and_an_unfinished_one_is_not_evaluated(run_dir, tmp_path, capsys):
    assert main(["resume", str(run_dir)]) == 2
    assert "has finished" in capsys.readouterr().err
    run = _copy(run_dir, tmp_path)
    (run / "config.json").unlink()
    (run / "status.json").write_text(json.dumps({"status": "interrupted"}))
    assert main(["evaluate", str(run)]) == 2
    assert f"rnnkit resume {run}" in capsys.readouterr().err


@pytest.mark.slow
def test_a_new_run_never_writes_into_an_old_one(tmp_path, capsys):
    task = get_task("forecast")
    cfg = task.config(epochs=1, hidden=4, progress=False)
    first = train_task(task, cfg, tmp_path).run_dir
    second = train_task(task, cfg, tmp_path).run_dir
    assert (first.name, second.name) == ("forecast", "forecast-2")
    assert "holds an earlier run (finished); writing" in capsys.readouterr().err
    again = train_task(task, cfg, tmp_path, overwrite=True).run_dir
    assert again == first and not (first / "csv" / "version_1").exists()  # replaced, not mixed


# -- flags and data ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--epochs", "-1", "--epochs must be >= 1, got -1"),
    ("--epochs", "0", "--epochs must be >= 1, got 0"),
    ("--batch-size", "0", "--batch-size must be >= 1, got 0"),
    ("--hidden", "wide", "Error parsing --hidden: invalid literal for int()"),
    ("--lr", "0", "--lr must be > 0, got 0.0"),
    ("--lr", "nan", "--lr must be finite, got nan"),
    ("--clip", "-1", "--clip must be >= 0, got -1.0"),
    ("--max-train", "-5", "--max-train must be >= 0, got -5"),
    ("--schedule", "warm", "--schedule must be one of constant, cosine, linear; got 'warm'"),
    ("--cell", "transformer", "--cell must be a registered cell"),
    ("--checkpoint-minutes", "-2", "--checkpoint-minutes must be >= 0, got -2.0"),
    ("--dropout", "1.5", "--dropout must be < 1, got 1.5"),
    ("--beam", "0", "--beam must be >= 1, got 0"),
    ("--average", "-1", "--average must be >= 0, got -1"),
])
def test_every_flag_is_checked_when_parsed(capsys, flag, value, message):
    with pytest.raises(SystemExit) as e:
        main(["train", "forecast", flag, value])
    out = capsys.readouterr()
    assert e.value.code == 2 and message in " ".join((out.err + out.out).split()), out


def test_the_config_checks_the_same_rules_for_library_callers():
    with pytest.raises(ValueError, match="--epochs must be >= 1, got -1"):
        get_task("forecast").config(epochs=-1)


def test_a_users_file_is_not_cut_to_the_bundled_default_and_a_cut_is_reported(capsys):
    task = get_task("chars")
    assert task.config().max_train == 4000 and task.config(data="mine.txt").max_train == 0
    cfg = task.config(data="mine.txt", max_train=3)
    assert task.cap(cfg, list(range(10))) == [0, 1, 2]
    assert "keeps 3 of the 10 training examples of mine.txt (7 dropped" in capsys.readouterr().err


def test_a_tie_is_printed_as_a_tie():
    from rnnkit.tasks_cli import _report

    task = get_task("forecast")
    assert "ties with baseline" in _report(task, {"mae": 3.0}, {"naive_mae": 3.0})
    assert "beats baseline" in _report(task, {"mae": 2.0}, {"naive_mae": 3.0})


@pytest.mark.parametrize(("epochs", "current", "text"), [(5, 0, "Epoch 1/5"), (1, 0, "Epoch 1/1"),
                                                          (-1, 3, "Epoch 4"), (None, 0, "Epoch 1")])
def test_the_progress_bar_counts_epochs_from_one(epochs, current, text):
    from rnnkit.train.trainer import EpochProgressBar

    bar = EpochProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=epochs)
    assert bar._get_train_description(current).strip() == text


def test_more_cpu_processes_than_cores_warns():
    from rnnkit.tasks_cli import devices_warning

    assert "--devices 4 is more processes than this machine's 2 CPUs" in devices_warning(4, "cpu", cpus=2)
    assert devices_warning(2, "cpu", cpus=2) is None and devices_warning(8, "gpu", cpus=2) is None
