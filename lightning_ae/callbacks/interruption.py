"""`GracefulInterruption`: Ctrl+C or SIGTERM during `fit` saves a checkpoint and stops the run cleanly.

The signal only sets a flag; the checkpoint is taken at the end of the training step that is
running (where Lightning's loops and the data loader are in a consistent state), so resuming
from it continues with the next step, as if the run had never stopped. A second Ctrl+C while
the step finishes stops at once, without a checkpoint.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from lightning_ae.callbacks.base import run_folder

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.ckpt"
# A shell reports a process ended by signal N with the exit status this base plus N.
SIGNAL_EXIT_BASE = 0x80


class RunInterrupted(BaseException):
    """Training stopped on a signal after saving `checkpoint`; `exit_code` is what a shell reports for it.

    A BaseException, like KeyboardInterrupt: the user asked the whole command to stop, so no
    `except Exception` on the way (a study that carries on past a failed run) may treat it as
    one run's failure.
    """

    def __init__(self, signal_name: str, signal_number: int, checkpoint: Path, epoch: int, step: int) -> None:
        self.signal_name, self.checkpoint, self.epoch, self.step = signal_name, checkpoint, epoch, step
        self.exit_code = SIGNAL_EXIT_BASE + signal_number
        super().__init__(
            f"{signal_name} received: stopped in epoch {epoch} after optimizer step {step}; checkpoint saved to "
            f"{checkpoint}. Resume with the same command and --ckpt_path last (or --ckpt_path {checkpoint})."
        )


class GracefulInterruption(Callback):
    """On SIGINT or SIGTERM during training: finish the step, save `last.ckpt`, raise `RunInterrupted`."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        self.received = None
        for number in self.SIGNALS:
            self._previous[number] = signal.signal(number, self._handle)

    def _handle(self, number: int, frame: Any) -> None:
        if self.received is not None and number == signal.SIGINT:
            self._restore()
            raise KeyboardInterrupt  # asked twice: stop now
        self.received = signal.Signals(number)
        log.warning("%s received: checkpoint after this step (Ctrl+C again: stop at once)", self.received.name)

    def _restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.received is None:
            return
        checkpoint = self.checkpoint_path(trainer)
        trainer.save_checkpoint(checkpoint)
        self._restore()
        raise RunInterrupted(
            self.received.name, int(self.received), checkpoint, trainer.current_epoch, trainer.global_step
        )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()

    @staticmethod
    def checkpoint_path(trainer: pl.Trainer) -> Path:
        """`last.ckpt` beside the ModelCheckpoint's files (where `--ckpt_path last` looks), else in the log folder."""
        callback = trainer.checkpoint_callback
        folder = getattr(callback, "dirpath", None) or run_folder(trainer) / "checkpoints"
        return Path(folder) / LAST_CHECKPOINT
