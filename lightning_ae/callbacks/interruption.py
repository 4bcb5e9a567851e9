"""`GracefulInterruption`: Ctrl+C or SIGTERM stops a run cleanly, at a point it can be resumed from.

The signal only sets a flag, acted on where Lightning's loops and the data loader are in a
consistent state:

- in training, at the end of the step that is running, or after the epoch when the signal came
  during its validation (once ModelCheckpoint has weighed the epoch): a checkpoint is saved there,
  so resuming from it continues with the next step, as if the run had never stopped;
- in test, validate or predict (the test after a fit included), at the end of the batch that is
  running: nothing is saved (the fit's checkpoints are intact) and no results are written;
- during the sanity check before training: at its end, before anything was trained.

A second Ctrl+C while a step finishes stops at once, without a checkpoint.
"""

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
    """A run stopped on a signal; `checkpoint` is where training can resume (None when nothing was trained
    since the last one); `exit_code` is what a shell reports for the signal.

    A BaseException, like KeyboardInterrupt: the user asked the whole command to stop, so no
    `except Exception` on the way (a study that carries on past a failed run) may treat it as
    one run's failure.
    """

    def __init__(
        self,
        signal_name: str,
        signal_number: int,
        checkpoint: Path | None,
        epoch: int,
        step: int,
        stage: str = "fit",
    ) -> None:
        self.signal_name, self.checkpoint, self.epoch, self.step, self.stage = (
            signal_name,
            checkpoint,
            epoch,
            step,
            stage,
        )
        self.exit_code = SIGNAL_EXIT_BASE + signal_number
        if checkpoint is not None:
            message = (
                f"{signal_name} received: stopped in epoch {epoch} after optimizer step {step}; checkpoint saved to "
                f"{checkpoint}. Resume with the same command and --ckpt_path last (or --ckpt_path {checkpoint})."
            )
        elif stage == "fit":
            message = (
                f"{signal_name} received: stopped before training started; nothing was trained or saved. "
                "Run the same command again."
            )
        else:
            message = (
                f"{signal_name} received: stopped during {stage} after batch {step}; no {stage} results were "
                "written. Run the same command again (a fit that had finished resumes with --ckpt_path last and "
                "goes straight to its test)."
            )
        super().__init__(message)


class GracefulInterruption(Callback):
    """On SIGINT or SIGTERM: finish the step or batch, save `last.ckpt` when training, raise `RunInterrupted`."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}
        self._stopped_at: tuple[int, int] | None = None

    def _install(self) -> None:
        """Replace the handlers (Lightning's too: its SIGTERM handler, registered just before a stage runs, only
        sets a flag that ends the run later with a SystemExit of status 0)."""
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for number in self.SIGNALS:
            self._previous.setdefault(number, signal.signal(number, self._handle))

    def _handle(self, number: int, frame: Any) -> None:
        if self.received is not None and number == signal.SIGINT:
            self._restore()
            raise KeyboardInterrupt  # asked twice: stop now
        self.received = signal.Signals(number)
        log.warning("%s received: stopping after this step (Ctrl+C again: stop at once)", self.received.name)

    def _restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def _stop(self, checkpoint: Path | None, epoch: int, step: int, stage: str) -> None:
        assert self.received is not None
        received, self.received = self.received, None
        self._restore()
        raise RunInterrupted(received.name, int(received), checkpoint, epoch, step, stage)

    # -- fit: installed before the sanity check, acted on after a training step or an epoch's validation --

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.received, self._stopped_at = None, None

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install()  # again: without a sanity check, this is the first hook after Lightning's registration

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.received is not None:
            self._stop(None, trainer.current_epoch, trainer.global_step, "fit")

    def _save_and_stop(self, trainer: pl.Trainer, at: tuple[int, int] | None = None) -> None:
        """Save `last.ckpt` where training is now; report the stop at `at` (epoch, step), else here."""
        checkpoint = self.checkpoint_path(trainer)
        trainer.save_checkpoint(checkpoint, weights_only=False)  # the whole state: optimizer, loops, callbacks
        epoch, step = at or (trainer.current_epoch, trainer.global_step)
        self._stop(checkpoint, epoch, step, "fit")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.received is not None:
            self._save_and_stop(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A signal during the epoch's validation (the last one's too: before the test that follows a fit).
        # ModelCheckpoint runs after this hook and weighs the epoch's val/loss for the best checkpoint: stop
        # the fit after the epoch, and act when training has ended.
        if self.received is not None:
            trainer.should_stop = True
            self._stopped_at = (trainer.current_epoch, trainer.global_step)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.received is not None:  # saved at the end of the epoch: a resume starts the next one
            self._save_and_stop(trainer, self._stopped_at)
        # Here, not in on_fit_end: Lightning puts back the handlers it found only when the stage ends, and
        # on_fit_end runs after that, where giving back Lightning's handler would leave it installed for good
        # (a process that runs several fits, a study, would then only log a SIGTERM, never stop).
        self._restore()

    # -- test, validate and predict on their own: acted on after a batch, nothing saved --

    def _evaluation_start(self, trainer: pl.Trainer) -> None:
        if trainer.state.fn != "fit":  # a fit's validation is covered by the fit's handlers
            self.received = None
            self._install()

    def _evaluation_batch_end(self, trainer: pl.Trainer, batch_idx: int) -> None:
        if self.received is not None and trainer.state.fn != "fit":
            self._stop(None, trainer.current_epoch, batch_idx + 1, trainer.state.fn.value)

    def _evaluation_end(self, trainer: pl.Trainer) -> None:
        if trainer.state.fn != "fit":
            self._restore()

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._evaluation_start(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._evaluation_start(trainer)

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._evaluation_start(trainer)

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any) -> None:
        self._evaluation_batch_end(trainer, _batch_idx(args, kwargs))

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        self._evaluation_batch_end(trainer, _batch_idx(args, kwargs))

    def on_predict_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        self._evaluation_batch_end(trainer, _batch_idx(args, kwargs))

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._evaluation_end(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._evaluation_end(trainer)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._evaluation_end(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()

    @staticmethod
    def checkpoint_path(trainer: pl.Trainer) -> Path:
        """`last.ckpt` beside the ModelCheckpoint's files (where `--ckpt_path last` looks), else in the log folder."""
        callback = trainer.checkpoint_callback
        folder = getattr(callback, "dirpath", None) or run_folder(trainer) / "checkpoints"
        return Path(folder) / LAST_CHECKPOINT


def _batch_idx(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """`batch_idx` of an evaluation `*_batch_end` hook: (outputs, batch, batch_idx, dataloader_idx=0)."""
    return int(kwargs["batch_idx"]) if "batch_idx" in kwargs else int(args[2])
