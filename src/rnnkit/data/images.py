"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (MIT): the official split.

The package installs the four IDX files of Xiao et al. (2017) under
``/usr/share/datasets/fashion-mnist/``; :func:`fashion_mnist` reads them (gzip-compressed IDX:
a big-endian header, then unsigned bytes) without any other package.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from rnnkit.data.bundled import DatasetInfo, DataUnavailable
from rnnkit.data.readers import DataError

__all__ = ["FASHION_CLASSES", "FASHION_MNIST", "fashion_mnist", "load_gray", "read_idx"]

FASHION_DIR = Path(os.environ.get("RNNKIT_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST = DatasetInfo(
    "fashion-mnist", f"Debian package dataset-fashion-mnist: {FASHION_DIR}/{{train,t10k}}-*-idx*-ubyte.gz",
    "MIT (Zalando Research)", "70,000 grayscale 28x28 images of 10 clothing classes (60,000 train, 10,000 test)",
    "the official test set of 10,000; the last 5,000 training images are validation",
    "sudo apt-get install dataset-fashion-mnist (or: bash scripts/setup_data.sh)",
    "Xiao, Rasul & Vollgraf, Fashion-MNIST, arXiv:1708.07747, 2017",
)
FASHION_CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle boot"]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip-compressed or not) as a numpy array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:  # 0x08: unsigned bytes
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, the file holds {body.size} values (truncated?)")
    return body.reshape(shape)


def fashion_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 28, 28) float32 in [0, 1], labels (N,) int64)`` of ``split``: "train" (60,000)
    or "test" (10,000)."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz", FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz"
    for path in (images, labels):
        if not path.is_file():
            raise DataUnavailable(f"{path} is missing; run: {FASHION_MNIST.install}")
    x, y = read_idx(images), read_idx(labels)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{images} holds {x.shape[0]} images but {labels} {y.shape[0]} labels")
    return x.astype(np.float32) / 255.0, y.astype(np.int64)


def load_gray(path: Path, where: tuple[str, int | None], size: tuple[int, int] = (28, 28)) -> np.ndarray:
    """An image file as grayscale ``size`` floats in [0, 1]; an unreadable one is a :class:`DataError`
    at ``where`` (file, line)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L").resize(size[::-1]), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(where[0], where[1], f"cannot read image {str(path)!r}: {err}") from None
