"""Video tagging (the video task): the clips move one item the way their tags say, a brief training
of CNN-per-frame + GRU beats the same CNN on the mean frame on the motion tags (which a single image
cannot show), and a user's tagged clips go through train, evaluate, predict and export (the exported
graph, run without torch, prints what ``rnnkit predict`` prints)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from _task_helpers import assert_beats, train_small
from rnnkit.cli import main
from rnnkit.data.images import FASHION_DIR
from rnnkit.data.readers import DataError
from rnnkit.models import RecurrentConfig
from rnnkit.tasks import get_task
from rnnkit.tasks.video import DIRECTIONS, SPEEDS, VideoTagger, tagged_clips
from test_onnx_runner import ISOLATED

needs_data = pytest.mark.skipif(not FASHION_DIR.is_dir(),
                                reason="dataset-fashion-mnist not installed (bash scripts/setup_data.sh)")

#: the brief training of the test and the tour
BRIEF = dict(max_train=2000, epochs=3)


def _centres(clip):
    """The lit pixels' centre ``(y, x)`` in every frame."""
    ys, xs = np.mgrid[: clip.shape[1], : clip.shape[2]]
    mass = clip.reshape(len(clip), -1).sum(1)
    return np.stack([(clip * ys).reshape(len(clip), -1).sum(1) / mass,
                     (clip * xs).reshape(len(clip), -1).sum(1) / mass], 1)


def test_clips_move_the_way_their_tags_say():
    rng = np.random.default_rng(0)
    images = rng.uniform(0.3, 1.0, (5, 28, 28)).astype(np.float32)
    clips, tags = tagged_clips(images, np.arange(5), 60, seed=0)
    assert clips.shape == (60, 10, 64, 64) and clips.dtype == np.uint8
    again, same = tagged_clips(images, np.arange(5), 60, seed=0)
    assert np.array_equal(clips, again) and tags == same
    seen = set()
    for clip, (item, d, s) in zip(clips, tags, strict=True):
        lit = np.rint(images[item] * 255).sum()
        assert (clip.reshape(10, -1).sum(1) == lit).all()  # the whole item in every frame: no wall is met
        steps = np.diff(_centres(clip.astype(float)), axis=0)
        axis = {"right": (1, 1), "left": (1, -1), "down": (0, 1), "up": (0, -1)}[DIRECTIONS[d]]
        along = steps[:, axis[0]] * axis[1]
        assert (along > 0).all()  # every frame a step that way (positions are rounded to pixels)
        assert abs(steps[:, 1 - axis[0]].sum()) <= np.tan(np.deg2rad(15)) * along.sum() + 1  # within 15 degrees
        assert 22 <= along.sum() <= 33
        ratio = along[-3:].mean() / along[:3].mean()
        want = {"speeding up": ratio > 2, "slowing down": ratio < 0.5, "steady": 0.8 < ratio < 1.25}
        assert want[SPEEDS[s]], (SPEEDS[s], ratio)
        seen.add((d, s))
    assert len(seen) == 12  # every direction and change of speed occurs


def test_the_tagger_heads_and_the_order_of_frames():
    torch.manual_seed(0)
    model = VideoTagger([3, 4], (32, 32), RecurrentConfig(cell="gru", hidden_size=8)).eval()
    clips = torch.rand(2, 5, 32, 32)
    logits = model(clips)
    assert logits.shape == (2, 7) and [b.shape[-1] for b in model.split(logits)] == [3, 4]
    assert not torch.allclose(model(clips.flip(1)), logits)  # it sees the order of the frames
    torch.testing.assert_close(model(clips[1:]), logits[1:])
    assert model(torch.rand(1, 9, 32, 32)).shape == (1, 7)  # any number of frames


@needs_data
def test_the_loader_tags_clips_of_separate_images():
    task = get_task("video")
    data = task.prepare(task.config(max_train=30))
    assert (len(data.train), len(data.val), len(data.test)) == (30, 300, 1000)
    assert data.meta["tags"] == ["object", "direction", "speed"] and data.meta["size"] == [64, 64]
    assert data.train[0][0].shape == (10, 64, 64)
    counts = np.bincount([t[1] * 3 + t[2] for _, t in data.test], minlength=12)
    assert counts.min() > 50  # the motion classes are balanced in the test clips


@pytest.mark.slow
@needs_data
def test_brief_training_beats_the_mean_frame_on_the_motion_tags(tmp_path):
    task, result = train_small(tmp_path, "video", **BRIEF)
    m, b = result.metrics, result.baselines
    assert_beats(task, result, margin=0.05)  # every tag right, on 1,000 held-out clips
    for tag in ("direction", "speed"):  # a single image cannot tell which way or which change
        assert m[f"{tag}_accuracy"] > b[f"mean_frame_{tag}_accuracy"] + 0.3, (m, b)
        assert m[f"{tag}_accuracy"] > b[f"middle_frame_{tag}_accuracy"] + 0.3, (m, b)
    assert (result.run_dir / "clips.png").is_file()


def _user_clips(tmp_path, n=24, frames=6, size=16):
    """A bright square moving left or right (tag 'way'), large or small (tag 'size')."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        way, big = ("left", "right")[i % 2], i % 3 == 0
        side = 6 if big else 3
        clip = np.zeros((frames, size, size), dtype=np.uint8)
        y = rng.integers(0, size - side)
        for t in range(frames):
            x = 1 + t if way == "right" else size - side - 1 - t
            clip[t, y : y + side, x : x + side] = 255
        np.save(tmp_path / f"v{i}.npy", clip)
        rows.append(f"v{i}.npy,{way},{'big' if big else 'small'}")
    table = tmp_path / "clips.csv"
    table.write_text("clip,way,size\n" + "\n".join(rows) + "\n")
    return table


@pytest.mark.slow
def test_cli_round_trip_on_a_users_tagged_clips(tmp_path, capsys):
    table = _user_clips(tmp_path)
    assert main(["train", "video", "--data", str(table), "--epochs", "3", "--hidden", "8", "--out", str(tmp_path),
                 "--name", "mine", "--no-progress"]) == 0
    run = tmp_path / "mine"
    assert "video: exact_match = " in capsys.readouterr().out
    assert main(["evaluate", str(run)]) == 0
    capsys.readouterr()
    inputs = tmp_path / "in.txt"
    inputs.write_text(f"{tmp_path / 'v0.npy'}\n\n{tmp_path / 'v1.npy'}\n")
    assert main(["predict", str(run), str(inputs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[1] == ""
    assert lines[0].startswith("way=") and "\tsize=" in lines[0]
    assert main(["export", str(run)]) == 0
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out
    proc = subprocess.run([sys.executable, "-c", ISOLATED, str(run / "onnx" / "run_onnx.py"), str(run / "onnx"),
                           str(inputs)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == lines


def test_bad_user_files_name_the_file_and_line(tmp_path):
    table = _user_clips(tmp_path, n=6)
    task = get_task("video")
    np.save(tmp_path / "v3.npy", np.zeros((6, 16, 32), dtype=np.uint8))
    with pytest.raises(DataError, match=r"clips.csv, line 5: clip of shape \(6, 16, 32\); the first clip's is"):
        task.prepare(task.config(data=str(table)))
    table.write_text("clip\nv0.npy\nv1.npy\n")
    with pytest.raises(DataError, match="needs at least one tag column besides 'clip'"):
        task.prepare(task.config(data=str(table)))
    table.write_text("clip,way\nv0.npy,left\nv1.npy,left\nv2.npy,left\n")
    with pytest.raises(DataError, match=r"tag column 'way' needs at least 2 values, found \['left'\]"):
        task.prepare(task.config(data=str(table)))
    for i in (0, 1):
        np.save(tmp_path / f"v{i}.npy", np.zeros((6, 20, 20), dtype=np.uint8))
    table.write_text("clip,way\nv0.npy,left\nv1.npy,right\n")
    with pytest.raises(DataError, match="frames of 20x20: height and width must be multiples of 16"):
        task.prepare(task.config(data=str(table)))
