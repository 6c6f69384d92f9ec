"""Batches, losses and metrics for :class:`~rnnkit.train.TrainModule`, with length masks.

A batch is a dict with ``"x"`` (inputs), ``"y"`` (targets) and optionally ``"lengths"`` ``(B,)``
and ``"reset"`` ``(B,)`` bool (stateful TBPTT: start these samples' state from zero), or a tuple
``(x, y)`` / ``(x, y, lengths)``. Targets are per sequence (``(B,)``, ``(B, D)``) or per step
(``(B, T)``, ``(B, T, D)``, batch first). With lengths, per-step losses average over the valid
steps only: ``mask[b, t] = t < lengths[b]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LOSSES", "METRICS", "as_batch", "get_loss", "get_metric", "step_mask"]

LossFn = Callable[..., Tensor]


def as_batch(batch: Any) -> dict[str, Any]:
    """Normalise a batch to a dict with keys x, y, lengths (maybe None), reset (maybe None)."""
    if isinstance(batch, Mapping):
        if "x" not in batch or "y" not in batch:
            raise ValueError(f"a dict batch needs keys 'x' and 'y', got {sorted(batch)}")
        out = dict(batch)
    elif isinstance(batch, list | tuple) and len(batch) in (2, 3):
        out = {"x": batch[0], "y": batch[1], "lengths": batch[2] if len(batch) == 3 else None}
    else:
        raise ValueError(
            "a batch must be a dict with 'x' and 'y' (and optionally 'lengths', 'reset') or a tuple (x, y[, lengths]); "
            f"got {type(batch).__name__}" + (f" of length {len(batch)}" if isinstance(batch, list | tuple) else "")
        )
    out.setdefault("lengths", None)
    out.setdefault("reset", None)
    return out


def step_mask(lengths: Tensor | None, pred: Tensor, target: Tensor, steps: int) -> Tensor | None:
    """``(B, T)`` bool mask of valid steps when the target is per step and lengths are given."""
    if lengths is None or target.dim() < 2 or target.size(1) != steps or pred.dim() < 2 or pred.size(1) != steps:
        return None
    return torch.arange(steps, device=pred.device).unsqueeze(0) < lengths.to(pred.device).unsqueeze(1)


def _reduce(elementwise: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over everything, or over the ``mask``-ed ``(B, T)`` positions (trailing dims averaged)."""
    if mask is None:
        return elementwise.mean()
    per_step = elementwise.reshape(*mask.shape, -1).mean(-1)  # (B, T)
    m = mask.to(per_step.dtype)
    return (per_step * m).sum() / m.sum().clamp_min(1.0)


def _match(pred: Tensor, target: Tensor, name: str) -> Tensor:
    if pred.shape == target.shape:
        return pred
    if pred.dim() == target.dim() + 1 and pred.size(-1) == 1:
        return pred.squeeze(-1)  # (..., 1) prediction for a scalar target
    raise ValueError(f"{name}: prediction shape {tuple(pred.shape)} does not match target shape {tuple(target.shape)}")


def mse(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    pred = _match(pred, target, "mse")
    return _reduce((pred - target.to(pred.dtype)).pow(2), mask)


def l1(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    pred = _match(pred, target, "l1")
    return _reduce((pred - target.to(pred.dtype)).abs(), mask)


def cross_entropy(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """``pred (..., C)`` logits, ``target (...)`` class indices."""
    if pred.shape[:-1] != target.shape:
        raise ValueError(
            f"cross_entropy: logits {tuple(pred.shape)} need targets of shape {tuple(pred.shape[:-1])}, "
            f"got {tuple(target.shape)}"
        )
    loss = F.cross_entropy(pred.reshape(-1, pred.size(-1)), target.reshape(-1).long(), reduction="none")
    return _reduce(loss.view(target.shape), mask)


def bce(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Binary cross-entropy on logits."""
    pred = _match(pred, target, "bce")
    return _reduce(F.binary_cross_entropy_with_logits(pred, target.to(pred.dtype), reduction="none"), mask)


def accuracy(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Share of argmax predictions equal to the target (logits ``(..., C)``)."""
    return _reduce((pred.argmax(-1) == target).to(pred.dtype), mask)


LOSSES: dict[str, LossFn] = {"mse": mse, "l1": l1, "cross_entropy": cross_entropy, "bce": bce}
METRICS: dict[str, LossFn] = {**LOSSES, "mae": l1, "accuracy": accuracy}


def _resolve(spec: str | LossFn, table: Mapping[str, LossFn], what: str) -> LossFn:
    if callable(spec):
        return spec
    if spec not in table:
        raise ValueError(f"unknown {what} {spec!r}; known: {', '.join(sorted(table))}, or pass a callable")
    return table[spec]


def get_loss(spec: str | LossFn) -> LossFn:
    """A loss by name (:data:`LOSSES`) or a callable ``fn(pred, target, mask=None) -> scalar``."""
    return _resolve(spec, LOSSES, "loss")


def get_metric(spec: str | LossFn) -> LossFn:
    return _resolve(spec, METRICS, "metric")
