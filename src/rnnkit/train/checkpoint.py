"""Checkpoints as safetensors + JSON, never pickle; written atomically, validated when read.

A checkpoint is a directory (named ``*.ckpt`` by Lightning's ``ModelCheckpoint``)::

    step=000100.ckpt/
      weights.safetensors   the model's state_dict (``checkpoint["state_dict"]``), plain keys
      state.safetensors     every other tensor: optimizer moments, RNG states, callback values
      config.json           everything else (loop progress, epoch, global step, hyperparameters,
                            the model config, optimizer hyperparameters, scheduler state), with
                            tensors replaced by references, and the sha256 of both files

The whole directory is written under a temporary name in the same parent and moved into place
with ``os.replace``, so a reader sees either the previous checkpoint or the new one, never half
of one. Reading checks the format marker, both checksums, and that every referenced tensor
exists; any failure is a ``ValueError`` that names the file and the problem.

:class:`SafetensorsCheckpointIO` plugs this into Lightning (``Trainer(plugins=[...])``), so
``ModelCheckpoint`` writes it and ``trainer.fit(ckpt_path=...)`` resumes from it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.plugins.io import CheckpointIO
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

__all__ = [
    "FORMAT", "SafetensorsCheckpointIO", "check_state_dict", "load_weights", "read_checkpoint", "write_checkpoint",
]

FORMAT, VERSION = "rnnkit-checkpoint", 1
WEIGHTS, STATE, CONFIG = "weights.safetensors", "state.safetensors", "config.json"


# -- encoding: nested Python values <-> JSON with tensor references ---------------------------------
def _encode(obj: Any, tensors: dict[str, Tensor], where: str) -> Any:
    if isinstance(obj, Tensor):
        key = where if where not in tensors else f"{where}#{len(tensors)}"
        tensors[key] = obj.detach().to("cpu").contiguous().clone()  # clone: no shared storage in the file
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return {"__numpy__": _encode(torch.from_numpy(np.ascontiguousarray(obj)), tensors, where)["__tensor__"]}
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, Enum):
        obj = obj.value
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, torch.dtype):
        return {"__dtype__": str(obj).removeprefix("torch.")}
    if isinstance(obj, torch.device):
        return {"__device__": str(obj)}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{where}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{where}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, f"{where}/{k}") for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors, f"{where}/key{i}"), _encode(v, tensors, f"{where}/{k}")]
                              for i, (k, v) in enumerate(obj.items())]}
    raise TypeError(f"cannot store a {type(obj).__name__} at {where or '/'} in a checkpoint without pickle")


def _decode(obj: Any, tensors: Mapping[str, Tensor], source: Path) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors, source) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        (tag, value), = obj.items()
        if tag in ("__tensor__", "__numpy__"):
            if value not in tensors:
                raise ValueError(f"{source}: config.json refers to tensor {value!r}, missing from {STATE}")
            return tensors[value] if tag == "__tensor__" else tensors[value].numpy()
        if tag == "__float__":
            return float(value)
        if tag == "__dtype__":
            return getattr(torch, value)
        if tag == "__device__":
            return torch.device(value)
        if tag == "__tuple__":
            return tuple(_decode(v, tensors, source) for v in value)
        if tag == "__items__":
            return {_decode(k, tensors, source): _decode(v, tensors, source) for k, v in value}
    return {k: _decode(v, tensors, source) for k, v in obj.items()}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- write / read ---------------------------------------------------------------------------------
def write_checkpoint(checkpoint: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``checkpoint`` (Lightning's dict, or any nested dict of tensors and plain values) to
    the directory ``path`` atomically (see the module docstring). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=path.parent))
    try:
        body = dict(checkpoint)
        weights = body.pop("state_dict", None)
        if weights is not None and not all(isinstance(v, Tensor) for v in weights.values()):
            raise TypeError("checkpoint['state_dict'] must map names to tensors")
        weights = {k: v.detach().to("cpu").contiguous().clone() for k, v in (weights or {}).items()}
        tensors: dict[str, Tensor] = {}
        encoded = _encode(body, tensors, "")
        save_file(weights, tmp / WEIGHTS)
        save_file(tensors, tmp / STATE)
        rnnkit_part = body.get("rnnkit") if isinstance(body.get("rnnkit"), Mapping) else {}
        config = {
            "format": FORMAT,
            "version": VERSION,
            "files": {WEIGHTS: _sha256(tmp / WEIGHTS), STATE: _sha256(tmp / STATE)},
            "has_state_dict": "state_dict" in checkpoint,
            "epoch": body.get("epoch"),
            "global_step": body.get("global_step"),
            "model_config": _encode(rnnkit_part.get("model_config"), {}, "model_config"),
            "weights": {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
                        for k, v in weights.items()},
            "checkpoint": encoded,
        }
        with open(tmp / CONFIG, "w") as f:
            json.dump(config, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        for name in (WEIGHTS, STATE):
            _fsync(tmp / name)
        _swap_in(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _swap_in(tmp: Path, path: Path) -> None:
    """Move the finished directory ``tmp`` to ``path``, replacing what was there."""
    if not path.exists() and not path.is_symlink():
        os.replace(tmp, path)
        return
    old = path.parent / f".old-{uuid.uuid4().hex}"
    os.replace(path, old)
    os.replace(tmp, path)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def _read_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not path.is_dir() or not (path / CONFIG).is_file():
        raise ValueError(
            f"{path}: not an rnnkit checkpoint (expected a directory holding {CONFIG}, {WEIGHTS} and {STATE})"
        )
    try:
        config = json.loads((path / CONFIG).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path / CONFIG}: unreadable ({e}); the checkpoint is corrupted") from e
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{path / CONFIG}: not an rnnkit checkpoint config (format marker {FORMAT!r} missing)")
    if config.get("version") != VERSION:
        raise ValueError(
            f"{path / CONFIG}: checkpoint format version {config.get('version')}, this rnnkit reads {VERSION}"
        )
    return config


def _read_tensors(path: Path, name: str, config: Mapping[str, Any]) -> dict[str, Tensor]:
    file = path / name
    expected = config.get("files", {}).get(name)
    if expected is None:
        raise ValueError(f"{path / CONFIG}: no checksum recorded for {name}; the checkpoint is incomplete")
    if not file.is_file():
        raise ValueError(f"{file}: missing; the checkpoint is incomplete")
    actual = _sha256(file)
    if actual != expected:
        raise ValueError(
            f"{file}: sha256 {actual[:16]}... does not match {expected[:16]}... recorded in {CONFIG}; "
            "the file is corrupted or was modified"
        )
    try:
        return load_file(file)
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise ValueError(f"{file}: not a readable safetensors file ({e})") from e


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a checkpoint written by :func:`write_checkpoint` (tensors on CPU)."""
    path = Path(path)
    config = _read_config(path)
    weights = _read_tensors(path, WEIGHTS, config)
    tensors = _read_tensors(path, STATE, config)
    checkpoint = _decode(config.get("checkpoint", {}), tensors, path)
    if config.get("has_state_dict"):
        checkpoint["state_dict"] = weights
    return checkpoint


def check_state_dict(expected: Mapping[str, Tensor], found: Mapping[str, Tensor], source: str | os.PathLike) -> None:
    """ValueError naming ``source`` unless ``found`` has exactly ``expected``'s keys and shapes."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [f"{k}: checkpoint {tuple(found[k].shape)}, model {tuple(expected[k].shape)}"
              for k in expected if k in found and tuple(found[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:8]}" + (" ..." if len(missing) > 8 else ""))
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:8]}" + (" ..." if len(unexpected) > 8 else ""))
        if shapes:
            parts.append("shape mismatch " + "; ".join(shapes[:8]))
        raise ValueError(f"{source}: the weights do not match the model: " + ", ".join(parts))


def load_weights(model: nn.Module, path: str | os.PathLike, *, prefix: str = "model.") -> nn.Module:
    """Load a checkpoint's weights into ``model`` after checking keys and shapes. Keys saved
    from a :class:`~rnnkit.train.TrainModule` carry ``prefix`` (its ``model`` attribute), which
    is stripped when ``model`` itself does not use it."""
    path = Path(path)
    weights = _read_tensors(path, WEIGHTS, _read_config(path))
    expected = model.state_dict()
    prefixed = weights and all(k.startswith(prefix) for k in weights)
    if prefix and prefixed and not any(k.startswith(prefix) for k in expected):
        weights = {k[len(prefix):]: v for k, v in weights.items()}
    check_state_dict(expected, weights, path / WEIGHTS)
    model.load_state_dict(weights)
    return model


class SafetensorsCheckpointIO(CheckpointIO):
    """Lightning checkpoint I/O through :func:`write_checkpoint` / :func:`read_checkpoint`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        write_checkpoint(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        checkpoint = read_checkpoint(path)
        checkpoint["rnnkit_source"] = str(path)
        if map_location is not None and not callable(map_location):
            checkpoint = move_data_to_device(checkpoint, map_location)
        return checkpoint

    def remove_checkpoint(self, path: Any) -> None:
        path = Path(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
