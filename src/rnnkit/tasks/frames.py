"""Pixel-neighbourhood prediction: the next 10 frames of moving-image clips from the first 10.

The guide's "RNNs combined with CNNs for pixel-neighbourhood prediction": a ConvLSTM
encoder-forecaster (:class:`rnnkit.models.FrameForecaster`, Shi et al. 2015) on clips of two
Fashion-MNIST items moving and bouncing on a 64x64 canvas (:mod:`rnnkit.data.moving`, the
Moving-MNIST construction of Srivastava et al. 2015). Training clips move images of the first
55,000 training images, validation clips the last 5,000, test clips the 10,000 test images, so
the test objects were never seen.

Metrics on the test clips, per predicted frame, on pixels in [0, 1]: ``mse`` is the squared
error summed over a frame's pixels (the Moving-MNIST papers' "MSE per frame", e.g. Wang et al.
2017, PredRNN) averaged over frames and clips; ``ssim`` the structural similarity (Wang et al.
2004, torchmetrics' implementation: Gaussian window 11, sigma 1.5). Baselines: repeat the last
seen frame (the headline), and a blank canvas.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit._files import write_bytes_atomic
from rnnkit.data.bundled import DatasetInfo
from rnnkit.data.images import fashion_mnist
from rnnkit.data.moving import moving_clips
from rnnkit.data.readers import DataError, read_table
from rnnkit.data.text import split_three
from rnnkit.models.frames import FrameForecaster
from rnnkit.tasks.base import Prepared, Task, TaskConfig, register

__all__ = ["FramesTask", "load_clip", "read_clips"]

FRAMES, CONTEXT = 20, 10  # the bundled clips: 20 frames, the first 10 seen
VAL_CLIPS, TEST_CLIPS = 200, 500
PATCH = 4
MOVING = DatasetInfo(
    "moving-fashion-mnist",
    "clips drawn by rnnkit.data.moving from the Debian package dataset-fashion-mnist "
    "(/usr/share/datasets/fashion-mnist)",
    "MIT (Zalando Research); the clips are generated, seeded",
    "two Fashion-MNIST items moving and bouncing on a 64x64 canvas, 20 frames per clip (10 seen, 10 predicted); "
    "--max-train training clips (default 3,000), 200 validation and 500 test clips",
    "training clips from the first 55,000 training images, validation from the last 5,000, test from the 10,000 "
    "test images (objects never seen in training)",
    "sudo apt-get install dataset-fashion-mnist (or: bash scripts/setup_data.sh)",
    "Srivastava, Mansimov & Salakhutdinov 2015 (Moving MNIST); Xiao, Rasul & Vollgraf 2017 (Fashion-MNIST)",
)


def load_clip(path: str | Path, where: tuple[str, int | None]) -> np.ndarray:
    """A ``.npy`` grayscale clip ``(T, H, W)`` as ``uint8``: either ``uint8`` 0-255 or floats in
    [0, 1]. ``where`` (file, line) names the table row in errors."""
    try:
        clip = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(where[0], where[1], f"cannot read the clip {path}: {err}") from None
    if clip.ndim != 3 or clip.shape[0] < 2:
        raise DataError(where[0], where[1], f"{path}: a clip must be (frames >= 2, height, width), got shape "
                                            f"{clip.shape}")
    if clip.dtype == np.uint8:
        return clip
    if not np.issubdtype(clip.dtype, np.floating) or not np.isfinite(clip).all() or clip.min() < 0 or clip.max() > 1:
        raise DataError(where[0], where[1], f"{path}: pixels must be uint8 0-255 or finite floats in [0, 1] "
                                            f"(dtype {clip.dtype})")
    return np.rint(clip * 255).astype(np.uint8)


def read_clips(table: str | Path, rows: list[tuple[int, dict[str, str]]], multiple: int) -> list[np.ndarray]:
    """The clips named by the ``'clip'`` column of a table's ``rows`` (paths relative to the table),
    all of one shape, their height and width multiples of ``multiple``; errors name the line."""
    base = Path(table).parent
    clips = [load_clip(base / row["clip"], (table, line)) for line, row in rows]
    shape = clips[0].shape
    for (line, _), clip in zip(rows, clips, strict=True):
        if clip.shape != shape:
            raise DataError(table, line, f"clip of shape {clip.shape}; the first clip's is {shape} "
                                         "(every clip must have one shape)")
    if shape[1] % multiple or shape[2] % multiple:
        raise DataError(table, None, f"frames of {shape[1]}x{shape[2]}: height and width must be "
                                     f"multiples of {multiple}")
    return clips


@register
class FramesTask(Task):
    name = "frames"
    title = "predicting the next frames of moving images"
    topology = "many-to-many unequal (ConvLSTM encoder-forecaster)"
    dataset = MOVING
    metric, higher_is_better, baseline = "mse", False, "repeat_last_mse"
    user_format = ("CSV/TSV with a column 'clip': the path (relative to the CSV) of a .npy grayscale clip "
                   "(frames, height, width), uint8 0-255 or floats in [0, 1]; every clip of one shape, height and "
                   "width multiples of 4; the first half of the frames is seen, the rest predicted; split 80/10/10 "
                   "by a seeded shuffle")
    predict_format = ("one .npy clip path per line (or the --data table's 'clip' column), at least the seen "
                      "frames; writes PATH.next.npy beside it (the predicted frames, floats in [0, 1]) and prints "
                      "that path and the mean pixel value of each predicted frame")
    input_column, input_is_path = "clip", True
    defaults = dict(cell="convlstm", hidden=64, epochs=3, batch_size=16, lr=3e-3, schedule="cosine", max_train=3000)
    picture_name = "frames.png"
    cell_feature_dims = 3

    def prepare(self, cfg: TaskConfig) -> Prepared:
        if cfg.data:
            clips = read_clips(cfg.data, read_table(cfg.data, ["clip"]), PATCH)
            shape = clips[0].shape
            if len(clips) < 3:
                raise DataError(cfg.data, None, f"needs at least 3 clips (train, validation, test), found {len(clips)}")
            train, val, test = split_three(clips, seed=cfg.seed)
            context = shape[0] // 2
        else:
            x, y = fashion_mnist("train")
            xt, yt = fashion_mnist("test")
            count = cfg.max_train or 3000
            train = list(moving_clips(x[:-5000], y[:-5000], count, frames=FRAMES, seed=cfg.seed * 3 + 1)[0])
            val = list(moving_clips(x[-5000:], y[-5000:], VAL_CLIPS, frames=FRAMES, seed=cfg.seed * 3 + 2)[0])
            test = list(moving_clips(xt, yt, TEST_CLIPS, frames=FRAMES, seed=cfg.seed * 3 + 3)[0])
            context = CONTEXT
        T, H, W = train[0].shape
        return Prepared(train, val, test, {"context": context, "horizon": T - context, "size": [H, W]})

    def collate(self, examples: list[Any], meta: dict[str, Any]) -> dict[str, Tensor]:
        clips = torch.from_numpy(np.stack(examples)).float().div_(255).unsqueeze(2)  # (B, T, 1, H, W)
        c = meta["context"]
        return {"x": clips[:, :c], "y": clips[:, c:]}

    def build(self, cfg: TaskConfig, meta: dict[str, Any]) -> nn.Module:
        if cfg.bidirectional:
            raise ValueError("bidirectional=True: the frames task's encoder-forecaster runs forward in time only")
        return FrameForecaster(channels=1, hidden=cfg.hidden, layers=cfg.layers, patch=PATCH)

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        y = batch["y"]
        return F.binary_cross_entropy_with_logits(model(batch["x"], y.shape[1]), y)

    # -- results ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def _predictions(self, model: nn.Module, examples: list[Any], meta: dict[str, Any]):
        """(predicted, true, last seen frame) for every example, ``(N, horizon, 1, H, W)`` floats."""
        model.eval()
        preds, truth, last = [], [], []
        for i in range(0, len(examples), 64):
            batch = self.collate(examples[i : i + 64], meta)
            preds.append(model.predict(batch["x"], meta["horizon"]))
            truth.append(batch["y"])
            last.append(batch["x"][:, -1:])
        return torch.cat(preds), torch.cat(truth), torch.cat(last)

    @staticmethod
    def _scores(pred: Tensor, truth: Tensor, prefix: str = "") -> dict[str, float]:
        from torchmetrics.functional.image import structural_similarity_index_measure as ssim

        pred = pred.expand_as(truth)
        per_frame = (pred - truth).square().sum((-1, -2, -3))  # (N, horizon)
        flat = lambda a: a.reshape(-1, *a.shape[2:])  # noqa: E731
        return {f"{prefix}mse": float(per_frame.mean()),
                f"{prefix}mse_first": float(per_frame[:, 0].mean()),
                f"{prefix}mse_last": float(per_frame[:, -1].mean()),
                f"{prefix}ssim": float(ssim(flat(pred), flat(truth), data_range=1.0))}

    def evaluate(self, model: nn.Module, examples: list[Any], meta: dict[str, Any]) -> dict[str, float]:
        pred, truth, _ = self._predictions(model, examples, meta)
        return self._scores(pred, truth)

    def baselines(self, data: Prepared) -> dict[str, float]:
        batch = self.collate(data.test, data.meta)
        truth, last = batch["y"], batch["x"][:, -1:]
        return {**self._scores(last, truth, "repeat_last_"), **self._scores(torch.zeros_like(last), truth, "blank_")}

    def picture(self, model: nn.Module, data: Prepared, path: Path) -> Path:
        from rnnkit.tasks.plots import plot_frames

        pred, truth, last = self._predictions(model, data.test[:2], data.meta)
        rows, labels = [], []
        for k in range(pred.shape[0]):
            rows += [truth[k, :, 0].numpy(), pred[k, :, 0].numpy()]
            labels += [f"clip {k + 1}: true", f"clip {k + 1}: predicted"]
        context = data.meta["context"]
        return plot_frames(rows, labels, [f"t={context + t + 1}" for t in range(pred.shape[1])], path,
                           f"{self.picture_title(data.meta)}: held-out clips, frames after the {context} seen")

    # -- predict / export ---------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, model: nn.Module, meta: dict[str, Any], lines: list[str]) -> list[str]:
        """Each input line is a ``.npy`` clip; its first ``context`` frames are read, and the
        predicted frames are written to ``PATH.next.npy``."""
        context, size = meta["context"], tuple(meta["size"])
        clips, paths = [], []
        for i, line in enumerate(lines, 1):
            path = Path(line.strip())
            clip = load_clip(path, ("<input>", i))
            if clip.shape[0] < context or clip.shape[1:] != size:
                raise DataError("<input>", i, f"{path}: clip of shape {clip.shape}; the model reads at least "
                                              f"{context} frames of {size[0]}x{size[1]}")
            clips.append(clip[:context])
            paths.append(path)
        x = torch.from_numpy(np.stack(clips)).float().div_(255).unsqueeze(2)
        frames = model.predict(x, meta["horizon"])[:, :, 0].numpy()
        return [_write_next(path, f) for path, f in zip(paths, frames, strict=True)]

    def onnx_bundle(self, model, meta):
        from rnnkit.onnx_graphs import OnnxBundle, OnnxGraph

        context, horizon, size = meta["context"], meta["horizon"], tuple(meta["size"])

        def example(batch: int, length: int):
            return (torch.rand(batch, context, *size, generator=torch.Generator().manual_seed(batch)),)

        graph = OnnxGraph("forecast_frames", _FramesGraph(model, horizon), example, ["context"], ["frames"],
                          {"context": {0: "batch"}, "frames": {0: "batch"}}, has_time=False)
        return OnnxBundle("frames", [graph], {"context": context, "horizon": horizon, "size": list(size)})


def _write_next(path: Path, frames: np.ndarray) -> str:
    """Write ``frames`` to ``PATH.next.npy``; the output line: that path and each frame's mean pixel."""
    out = path.with_name(path.name + ".next.npy")
    buf = io.BytesIO()
    np.save(buf, frames.astype(np.float32), allow_pickle=False)
    write_bytes_atomic(out, buf.getvalue())
    return f"{out}\t" + " ".join(f"{m:.4f}" for m in frames.reshape(len(frames), -1).mean(1))


class _FramesGraph(nn.Module):
    """Seen frames ``(B, context, H, W)`` in [0, 1] -> predicted frames ``(B, horizon, H, W)``."""

    def __init__(self, model: nn.Module, horizon: int) -> None:
        super().__init__()
        self.model, self.horizon = model, horizon

    def forward(self, context: Tensor) -> Tensor:
        return torch.sigmoid(self.model(context.unsqueeze(2), self.horizon)).squeeze(2)
