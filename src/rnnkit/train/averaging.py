"""Checkpoint averaging: the final weights are the mean of the weights at the last N epoch ends.

Averaging the last few checkpoints of a run is how Vaswani et al. (2017) report their translation
models, and an equal-weight running mean of SGD iterates is Izmailov et al.'s (2018) stochastic
weight averaging; the g2p literature averages or ensembles in the same spirit. :class:`EpochAverage`
is Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging` (an
:class:`torch.optim.swa_utils.AveragedModel` kept beside the model, saved in every checkpoint and
copied into the model when training ends) told when to update:

* after the last optimizer step of each of the last ``epochs`` epochs, inside the batch-end hook,
  so that the checkpoint written at that batch end (:class:`~rnnkit.train.interrupt.RunCheckpoint`,
  which must come after this callback in the list) already holds the update and a resumed run
  averages exactly the same weights;
* validation runs on the average once it has one (before that, on the live weights: Lightning's
  callback would validate the untouched initial copy).
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import WeightAveraging

__all__ = ["EpochAverage"]


class EpochAverage(WeightAveraging):
    """The equal-weight mean of the weights at the ends of the last ``epochs`` epochs."""

    def __init__(self, epochs: int) -> None:
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        super().__init__()
        self.epochs = epochs
        self._trainer: L.Trainer | None = None
        self._swapped = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._trainer = trainer

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        t = self._trainer
        return (step_idx is not None and t is not None and bool(t.is_last_batch)
                and t.current_epoch >= t.max_epochs - self.epochs)

    @property
    def averaged(self) -> int:
        """How many epoch ends are in the average so far."""
        return 0 if self._average_model is None else int(self._average_model.n_averaged)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._swapped = self.averaged > 0
        if self._swapped:
            self._swap_models(pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._swapped:
            self._swap_models(pl_module)
            self._swapped = False

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "epochs": self.epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("epochs", self.epochs) != self.epochs:
            raise ValueError(f"the checkpoint averages the last {state_dict['epochs']} epochs, this run "
                             f"{self.epochs}: resume with the run's own settings")
        super().load_state_dict(state_dict)
