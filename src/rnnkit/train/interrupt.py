"""A run that survives interruption: checkpoints at every epoch end and every N minutes, and a
clean stop on SIGINT/SIGTERM.

:class:`RunCheckpoint` writes one checkpoint directory (``last.ckpt``, an rnnkit safetensors
checkpoint, atomic: :mod:`rnnkit.train.checkpoint`) after the last training batch of every epoch
and, with ``every_minutes``, after the first batch that ends that long after the previous
checkpoint. Every checkpoint sits on a batch boundary: one written in ``on_train_epoch_end``
(after validation) does not resume to the same weights in Lightning 2.6, one written after the
epoch's last batch does (validation then runs again on resume, with the same result).
Resuming from it (``trainer.fit(ckpt_path=...)``) continues to the same weights as an uninterrupted
run, with the data order, RNG, optimizer and scheduler restored
(:class:`~rnnkit.train.TrainModule`, :class:`~rnnkit.train.ResumableLoader`).

While training runs, the first SIGINT (Ctrl-C) or SIGTERM only asks to stop: at the end of the
batch in progress the callback writes a final checkpoint and raises :class:`RunInterrupted`,
so the checkpoint always sits on a batch boundary. A second SIGINT interrupts at once (the
last complete checkpoint stays). After SIGKILL, the last complete checkpoint is there.
Signal handlers are installed in the main thread of a single process only (under DDP,
Lightning's own handling stays in place).
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import lightning as L

__all__ = ["RunCheckpoint", "RunInterrupted"]


class RunInterrupted(Exception):
    """Training stopped on a signal after writing a final checkpoint."""

    def __init__(self, signum: int, checkpoint: Path, epoch: int, step: int) -> None:
        self.signum, self.checkpoint, self.epoch, self.step = signum, checkpoint, epoch, step
        super().__init__(f"{signal.Signals(signum).name} at epoch {epoch}, step {step}; checkpoint {checkpoint}")

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by this signal: 128 + its number."""
        return 128 + int(self.signum)


class RunCheckpoint(L.Callback):
    """Checkpoint to ``path`` at each epoch end, every ``every_minutes`` (0: off) and on a signal."""

    def __init__(self, path: str | Path, every_minutes: float = 0.0) -> None:
        if every_minutes < 0:
            raise ValueError(f"every_minutes must be >= 0, got {every_minutes}")
        self.path, self.every_minutes = Path(path), float(every_minutes)
        self.requested: int | None = None
        self.saved = 0  # checkpoints written by this process
        self._last = time.monotonic()
        self._previous: dict[int, Any] = {}

    # -- signals ------------------------------------------------------------------------------
    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested is not None and signum == signal.SIGINT:  # a second Ctrl-C: stop now
            self._restore()
            raise KeyboardInterrupt
        self.requested = signum

    def _install(self, trainer: L.Trainer) -> None:
        if trainer.world_size > 1 or threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handler)

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    # -- hooks --------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = time.monotonic()
        self._install(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.requested is not None:
            self.save(trainer)
            self._restore()
            raise RunInterrupted(self.requested, self.path, trainer.current_epoch, trainer.global_step)
        due = self.every_minutes and time.monotonic() - self._last >= self.every_minutes * 60
        if trainer.is_last_batch or due:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.requested is not None:  # asked during this epoch's validation: its last batch's checkpoint stands
            self._restore()
            raise RunInterrupted(self.requested, self.path, trainer.current_epoch, trainer.global_step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path)  # the strategy writes on rank 0 only
        self.saved += 1
        self._last = time.monotonic()
