"""Image classification on Fashion-MNIST (Debian's dataset-fashion-mnist): the loader reads the
official split, the row RNN and the CNN + one step beat logistic regression on pixels, and a user's
own pictures go through train, evaluate, predict and export."""

from __future__ import annotations

import gzip
import subprocess
import sys

import numpy as np
import pytest

from _task_helpers import assert_beats, train_small
from rnnkit.cli import main
from rnnkit.data.bundled import DataUnavailable
from rnnkit.data.images import FASHION_DIR, fashion_mnist, read_idx
from test_onnx_runner import ISOLATED

needs_data = pytest.mark.skipif(not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file(),
                                reason="dataset-fashion-mnist not installed (bash scripts/setup_data.sh)")


@needs_data
def test_the_loader_reads_the_official_split():
    x, y = fashion_mnist("train")
    xt, yt = fashion_mnist("test")
    assert x.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28) and x.dtype == np.float32
    assert np.bincount(y).tolist() == [6000] * 10 and np.bincount(yt).tolist() == [1000] * 10
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.mean() > 0.2  # real pictures, not blanks


def test_idx_files_are_checked(tmp_path):
    good = tmp_path / "ok-idx1-ubyte.gz"
    with gzip.open(good, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes([1, 2, 3]))
    assert read_idx(good).tolist() == [1, 2, 3]
    short = tmp_path / "short-idx1-ubyte.gz"
    with gzip.open(short, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big") + bytes([1, 2]))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(short)
    with pytest.raises(ValueError, match="split must be"):
        fashion_mnist("validation")


def test_a_missing_package_names_the_install_command(monkeypatch, tmp_path):
    import rnnkit.data.images as images

    monkeypatch.setattr(images, "FASHION_DIR", tmp_path)
    with pytest.raises(DataUnavailable, match="apt-get install dataset-fashion-mnist"):
        images.fashion_mnist("train")


@pytest.mark.slow
@needs_data
def test_both_recurrent_classifiers_beat_logistic_regression_on_held_out_images(tmp_path):
    task, result = train_small(tmp_path, "image", max_train=20000, epochs=3)
    assert_beats(task, result, margin=0.01)  # the row GRU against logistic regression on pixels (same images)
    assert result.metrics["one_to_one_accuracy"] > result.baselines["logreg_accuracy"] + 0.01, result.metrics
    assert len(result.data.test) == 10000 and (result.run_dir / "confusion.png").is_file()


def _pictures(tmp_path, n=40):
    from PIL import Image

    rows = []
    rng = np.random.default_rng(0)
    for i in range(n):
        im = np.zeros((20, 20), dtype=np.uint8)
        if i % 2:
            im[:, 8:12] = 255  # a vertical bar
        else:
            im[8:12, :] = 255  # a horizontal bar
        im = np.clip(im + rng.integers(0, 40, im.shape), 0, 255).astype(np.uint8)
        Image.fromarray(im).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{'vertical' if i % 2 else 'horizontal'}")
    (tmp_path / "pictures.csv").write_text("image,label\n" + "\n".join(rows) + "\n")
    return tmp_path / "pictures.csv"


@pytest.mark.slow
def test_cli_round_trip_on_a_users_pictures(tmp_path, capsys):
    data = _pictures(tmp_path)
    assert main(["train", "image", "--data", str(data), "--epochs", "2", "--hidden", "16", "--out", str(tmp_path),
                 "--name", "mine", "--no-progress"]) == 0
    run = tmp_path / "mine"
    assert "image: accuracy = " in capsys.readouterr().out
    assert main(["evaluate", str(run)]) == 0
    capsys.readouterr()
    assert main(["predict", str(run), str(data)]) == 0
    out = capsys.readouterr()
    assert len(out.out.splitlines()) == 40 and all(line.split("\t")[0] in ("horizontal", "vertical")
                                                    for line in out.out.splitlines())
    assert "scored against the file's 'label' column" in out.err
    assert main(["export", str(run)]) == 0
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out
    np.save(tmp_path / "one.npy", np.zeros((28, 28), dtype=np.float32))
    (tmp_path / "npy.txt").write_text(f"{tmp_path / 'one.npy'}\n\n{tmp_path / 'one.npy'}\n")
    assert main(["predict", str(run), str(tmp_path / "npy.txt")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[1] == ""
    # the exported graph, run without torch or rnnkit, gives the same labels
    proc = subprocess.run([sys.executable, "-c", ISOLATED, str(run / "onnx" / "run_onnx.py"), str(run / "onnx"),
                           str(tmp_path / "npy.txt")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert [x.split("\t")[0] for x in proc.stdout.splitlines()] == [x.split("\t")[0] for x in lines]


def test_bad_user_files_name_the_file_and_line(tmp_path, capsys):
    data = _pictures(tmp_path, 4)
    data.write_text(data.read_text() + "missing.png,vertical\n")
    assert main(["train", "image", "--data", str(data), "--out", str(tmp_path)]) == 2
    assert f"{data}, line 6: cannot read image" in capsys.readouterr().err
    one = tmp_path / "one.csv"
    one.write_text("image,label\n0.png,horizontal\n2.png,horizontal\n")
    assert main(["train", "image", "--data", str(one), "--out", str(tmp_path)]) == 2
    assert "needs at least 2 classes" in capsys.readouterr().err
