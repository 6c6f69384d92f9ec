"""Next-frame prediction (the frames task): the moving-image clips are drawn as stated and seeded,
the ConvLSTM encoder-forecaster (Shi et al. 2015) predicts frames of the right shape from the seen
frames alone, a brief training beats repeating the last frame on held-out clips, and a user's own
clips go through train, evaluate, predict and export (the exported graph, run without torch,
writes the frames ``rnnkit predict`` writes)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

from _task_helpers import assert_beats, train_small
from rnnkit.cli import main
from rnnkit.data.images import FASHION_DIR
from rnnkit.data.moving import moving_clips
from rnnkit.data.readers import DataError
from rnnkit.models import FrameForecaster
from rnnkit.tasks import get_task
from test_onnx_runner import ISOLATED

needs_data = pytest.mark.skipif(not FASHION_DIR.is_dir(),
                                reason="dataset-fashion-mnist not installed (bash scripts/setup_data.sh)")

#: the brief training of the test and the tour: 600 clips twice, 32 hidden channels
BRIEF = dict(max_train=600, epochs=2, hidden=32)


def _items(n=6, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.2, 1.0, (n, size, size)).astype(np.float32), np.arange(n)


def test_clips_are_seeded_and_each_frame_holds_the_objects_where_the_motion_says():
    images, labels = _items()
    clips, motions = moving_clips(images, labels, 5, frames=12, canvas=32, objects=1, seed=3)
    again, _ = moving_clips(images, labels, 5, frames=12, canvas=32, objects=1, seed=3)
    other, _ = moving_clips(images, labels, 5, frames=12, canvas=32, objects=1, seed=4)
    assert clips.shape == (5, 12, 32, 32) and clips.dtype == np.uint8
    assert np.array_equal(clips, again) and not np.array_equal(clips, other)
    for clip, m in zip(clips, motions, strict=True):
        item = np.rint(images[m.items[0]] * 255).astype(np.uint8)
        for t in range(12):
            y, x = np.rint(m.positions[0, t]).astype(int)
            assert 0 <= y <= 24 and 0 <= x <= 24  # inside the canvas
            assert np.array_equal(clip[t, y : y + 8, x : x + 8], item)
            assert clip[t].sum() == item.sum()  # and nothing else is lit


def test_objects_move_at_their_speed_and_bounce_off_the_edges():
    images, labels = _items()
    _, motions = moving_clips(images, labels, 40, frames=30, canvas=24, objects=1, speed=(3.0, 3.0), seed=0)
    bounced = 0
    for m in motions:
        steps = np.diff(m.positions[0], axis=0)  # (29, 2)
        v = np.abs(np.array(m.velocity[0]))
        np.testing.assert_allclose(np.hypot(*v), 3.0)
        # away from the walls a step is the velocity; a bounce folds it back, never longer
        assert (np.abs(steps) <= v + 1e-9).all()
        inside = ((m.positions[0, :-1] >= v) & (m.positions[0, :-1] <= 16 - v)).all(1)
        np.testing.assert_allclose(np.abs(steps[inside]), np.broadcast_to(v, steps[inside].shape), atol=1e-9)
        bounced += int((np.sign(steps[1:]) * np.sign(steps[:-1]) < 0).any())
    assert bounced > 20  # most clips meet a wall in 30 frames on a small canvas


def test_speeding_up_and_slowing_down():
    images, labels = _items()
    for factor, grows in [(1.05, True), (0.95, False)]:
        _, motions = moving_clips(images, labels, 10, frames=10, canvas=64, objects=1, speed=(0.5, 1.0),
                                  accel=(factor,), seed=1)
        for m in motions:
            dist = np.hypot(*np.diff(m.positions[0], axis=0).T)  # slow, on a wide canvas: no wall is met
            assert (np.diff(dist) > 0).all() == grows and m.accel == [factor]


def test_clip_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(N, h, w\), got shape \(8, 8\)"):
        moving_clips(np.zeros((8, 8)), [0], 1)
    with pytest.raises(ValueError, match="do not fit a 16x16 canvas"):
        moving_clips(np.zeros((1, 28, 28)), [0], 1, canvas=16)


def test_the_forecaster_reads_only_the_seen_frames_and_feeds_itself():
    torch.manual_seed(0)
    model = FrameForecaster(hidden=4, patch=2).eval()
    ctx = torch.rand(2, 3, 1, 8, 8)
    out = model(ctx, 5)
    assert out.shape == (2, 5, 1, 8, 8)
    torch.testing.assert_close(model(ctx, 3), out[:, :3])  # a longer horizon only appends frames
    torch.testing.assert_close(model(ctx[1:], 5), out[1:])  # clips do not mix
    assert not torch.allclose(model(ctx.flip(1), 5), out)  # the order of the seen frames matters
    p = model.predict(ctx, 2)
    assert ((p > 0) & (p < 1)).all() and p.mean() < 0.2  # starts from a dark canvas


def test_the_forecaster_gradcheck_float64():
    torch.manual_seed(0)
    model = FrameForecaster(hidden=2, patch=2).double()
    ctx = torch.rand(1, 2, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda c: model(c, 2), (ctx,))


def test_forecaster_errors_name_the_shapes():
    model = FrameForecaster(hidden=2, patch=4)
    with pytest.raises(ValueError, match=r"\(batch, time, 1, height, width\), got \(2, 3, 8, 8\)"):
        model(torch.zeros(2, 3, 8, 8), 2)
    with pytest.raises(ValueError, match="frames of 6x8 are not multiples of patch=4"):
        model(torch.zeros(1, 3, 1, 6, 8), 2)
    with pytest.raises(ValueError, match="patch must be a positive int"):
        FrameForecaster(patch=0)


def test_the_task_takes_convolutional_cells_only():
    with pytest.raises(ValueError, match="--cell gru: task 'frames' takes convlstm"):
        get_task("frames").config(cell="gru")
    with pytest.raises(ValueError, match="--cell convlstm: task 'sentiment' takes"):
        get_task("sentiment").config(cell="convlstm")


@needs_data
def test_the_loader_draws_train_validation_and_test_clips_from_separate_images():
    task = get_task("frames")
    data = task.prepare(task.config(max_train=20))
    assert (len(data.train), len(data.val), len(data.test)) == (20, 200, 500)
    assert data.train[0].shape == (20, 64, 64) and data.train[0].dtype == np.uint8
    assert data.meta == {"context": 10, "horizon": 10, "size": [64, 64]}
    again = task.prepare(task.config(max_train=20))
    assert all(np.array_equal(a, b) for a, b in zip(data.test, again.test, strict=True))
    more = task.prepare(task.config(max_train=40))  # a larger cap draws more clips, the first ones the same
    assert all(np.array_equal(a, b) for a, b in zip(data.train, more.train[:20], strict=True))


@pytest.mark.slow
@needs_data
def test_brief_training_beats_repeating_the_last_frame_on_held_out_clips(tmp_path):
    task, result = train_small(tmp_path, "frames", **BRIEF)
    assert_beats(task, result, margin=50.0)  # squared error per 64x64 frame, summed over its pixels
    assert result.metrics["mse"] < result.baselines["blank_mse"] - 30, (result.metrics, result.baselines)
    assert (result.run_dir / "frames.png").is_file()


def _user_clips(tmp_path, n=12, frames=8, size=16):
    """A bright 4x4 square moving right by 1 pixel per frame, from a random start."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        clip = np.zeros((frames, size, size), dtype=np.uint8 if i % 2 else np.float32)
        y, x = rng.integers(0, size - 4), rng.integers(0, size - 4 - frames)
        for t in range(frames):
            clip[t, y : y + 4, x + t : x + t + 4] = 255 if i % 2 else 1.0
        np.save(tmp_path / f"c{i}.npy", clip)
        rows.append(f"c{i}.npy")
    table = tmp_path / "clips.csv"
    table.write_text("clip\n" + "\n".join(rows) + "\n")
    return table


@pytest.mark.slow
def test_cli_round_trip_on_a_users_clips(tmp_path, capsys):
    table = _user_clips(tmp_path)
    assert main(["train", "frames", "--data", str(table), "--epochs", "3", "--hidden", "8", "--out", str(tmp_path),
                 "--name", "mine", "--no-progress"]) == 0
    run = tmp_path / "mine"
    assert "frames: mse = " in capsys.readouterr().out
    assert main(["evaluate", str(run)]) == 0
    capsys.readouterr()
    inputs = tmp_path / "in.txt"
    inputs.write_text(f"{tmp_path / 'c0.npy'}\n\n{tmp_path / 'c1.npy'}\n")
    assert main(["predict", str(run), str(inputs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[1] == "" and lines[0].startswith(str(tmp_path / "c0.npy.next.npy"))
    ours = np.load(tmp_path / "c1.npy.next.npy")
    assert ours.shape == (4, 16, 16) and ours.dtype == np.float32 and 0 <= ours.min() and ours.max() <= 1
    assert main(["predict", str(run), str(tmp_path / "c1.npy")]) == 0  # a clip itself: that one input
    assert capsys.readouterr().out.startswith(str(tmp_path / "c1.npy.next.npy"))
    assert main(["predict", str(run), str(table)]) == 0  # the --data table: its clip column
    assert len(capsys.readouterr().out.splitlines()) == 12
    assert main(["export", str(run)]) == 0
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out
    (tmp_path / "c1.npy.next.npy").unlink()
    proc = subprocess.run([sys.executable, "-c", ISOLATED, str(run / "onnx" / "run_onnx.py"), str(run / "onnx"),
                           str(inputs)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    theirs = np.load(tmp_path / "c1.npy.next.npy")
    np.testing.assert_allclose(theirs, ours, atol=1e-5)
    assert [line.split("\t")[0] for line in proc.stdout.splitlines()] == [line.split("\t")[0] for line in lines]


def test_bad_user_clips_name_the_file_and_line(tmp_path, capsys):
    table = _user_clips(tmp_path, n=4)
    np.save(tmp_path / "c2.npy", np.zeros((8, 12, 16), dtype=np.uint8))
    task = get_task("frames")
    with pytest.raises(DataError, match=r"clips.csv, line 4: clip of shape \(8, 12, 16\); the first clip's is "
                                        r"\(8, 16, 16\)"):
        task.prepare(task.config(data=str(table)))
    np.save(tmp_path / "c2.npy", np.full((8, 16, 16), 2.0))
    with pytest.raises(DataError, match=r"line 4: .*c2.npy: pixels must be uint8 0-255 or finite floats in \[0, 1\]"):
        task.prepare(task.config(data=str(table)))
    np.save(tmp_path / "c2.npy", np.zeros((16, 16)))
    with pytest.raises(DataError, match=r"line 4: .*a clip must be \(frames >= 2, height, width\), got shape"):
        task.prepare(task.config(data=str(table)))
    (tmp_path / "c2.npy").write_text("not an array")
    with pytest.raises(DataError, match="line 4: cannot read the clip"):
        task.prepare(task.config(data=str(table)))
    for i in range(4):
        np.save(tmp_path / f"c{i}.npy", np.zeros((8, 10, 10), dtype=np.uint8))
    with pytest.raises(DataError, match="frames of 10x10: height and width must be multiples of 4"):
        task.prepare(task.config(data=str(table)))
