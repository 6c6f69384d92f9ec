"""Clips of real images moving over a blank canvas: the Moving-MNIST construction (Srivastava,
Mansimov & Salakhutdinov, "Unsupervised Learning of Video Representations using LSTMs", ICML 2015),
here with Fashion-MNIST items.

Each clip places ``objects`` images at random positions of a ``canvas x canvas`` frame and moves
each with its own velocity: a random direction and a speed in ``speed`` pixels per frame. An object
that reaches an edge bounces off it (the velocity component across the edge changes sign). Where
objects overlap, the brighter pixel wins (``max``). With ``accel`` each object's speed is multiplied
by a per-clip factor every frame (``> 1`` speeds it up, ``< 1`` slows it down).

Everything is drawn from one ``numpy`` generator seeded by the caller, so a split's clips are the
same on every machine. Frames are ``uint8`` (0-255), which keeps a few thousand clips of 20
64x64 frames in a few hundred MB.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Motion", "moving_clips", "render"]


@dataclass
class Motion:
    """What one clip holds: the image index, label and per-frame positions of each object."""

    items: list[int]  # indices into the images the clip was drawn from
    labels: list[int]
    velocity: list[tuple[float, float]]  # (dy, dx) at frame 0, pixels per frame
    accel: list[float]  # speed factor per frame
    positions: np.ndarray = field(repr=False)  # (objects, frames, 2): top-left (y, x) of each object


def _bounce(pos: float, vel: float, top: float) -> tuple[float, float]:
    """Reflect a coordinate that left ``[0, top]`` back into it (as often as needed)."""
    while pos < 0 or pos > top:
        if pos < 0:
            pos, vel = -pos, -vel
        if pos > top:
            pos, vel = 2 * top - pos, -vel
    return pos, vel


def render(pixels: np.ndarray, positions: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Draw objects ``pixels (K, h, w) uint8`` at ``positions (K, T, 2)`` (top-left ``(y, x)``,
    rounded to the nearest pixel) into the frames ``out (T, H, W) uint8``, brighter pixel winning."""
    h, w = pixels.shape[1:]
    for k in range(len(pixels)):
        for t in range(out.shape[0]):
            iy, ix = (int(round(v)) for v in positions[k, t])
            if iy < 0 or ix < 0 or iy + h > out.shape[1] or ix + w > out.shape[2]:
                raise ValueError(f"object {k} at frame {t}: position ({iy}, {ix}) puts a {h}x{w} image outside "
                                 f"the {out.shape[1]}x{out.shape[2]} canvas")
            np.maximum(out[t, iy : iy + h, ix : ix + w], pixels[k], out=out[t, iy : iy + h, ix : ix + w])
    return out


def moving_clips(
    images: np.ndarray, labels: np.ndarray, count: int, *, frames: int = 20, canvas: int = 64, objects: int = 2,
    speed: tuple[float, float] = (2.0, 4.0), accel: tuple[float, ...] = (1.0,), seed: int = 0,
) -> tuple[np.ndarray, list[Motion]]:
    """``count`` clips ``(count, frames, canvas, canvas) uint8`` of ``objects`` of ``images (N, h, w)``
    (floats in [0, 1]) moving and bouncing, and each clip's :class:`Motion`. ``accel``: the speed
    factors to draw from, one per object."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must be (N, h, w), got shape {images.shape}")
    n, h, w = images.shape
    if h > canvas or w > canvas:
        raise ValueError(f"images of {h}x{w} do not fit a {canvas}x{canvas} canvas")
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)
    clips = np.zeros((count, frames, canvas, canvas), dtype=np.uint8)
    top_y, top_x = canvas - h, canvas - w
    motions = []
    for c in range(count):
        items = rng.integers(0, n, objects)
        angle = rng.uniform(0, 2 * np.pi, objects)
        spd = rng.uniform(*speed, objects)
        factors = rng.choice(np.asarray(accel, dtype=float), objects)
        start = rng.uniform(0, 1, (objects, 2)) * (top_y, top_x)
        positions = np.zeros((objects, frames, 2))
        for k in range(objects):
            (y, x), vy, vx = start[k], spd[k] * np.sin(angle[k]), spd[k] * np.cos(angle[k])
            for t in range(frames):
                positions[k, t] = y, x
                vy, vx = vy * factors[k], vx * factors[k]
                y, vy = _bounce(y + vy, vy, top_y)
                x, vx = _bounce(x + vx, vx, top_x)
        render(pixels[items], positions, clips[c])
        motions.append(Motion([int(i) for i in items], [int(labels[i]) for i in items],
                              [(float(spd[k] * np.sin(angle[k])), float(spd[k] * np.cos(angle[k])))
                               for k in range(objects)],
                              [float(f) for f in factors], positions))
    return clips, motions
