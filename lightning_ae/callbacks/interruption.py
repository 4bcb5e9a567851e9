"""`GracefulInterruption`: Ctrl+C or SIGTERM stops a run cleanly, at a point it can be resumed from, within seconds.

While a fit trains, the signal only sets a flag, acted on where Lightning's loops and the data
loader are in a consistent state:

- in a training step, at its end: `last.ckpt` is saved there, so resuming continues with the next
  step, as if the run had never stopped;
- in a fit's validation, at the end of the validation batch that is running: `last.ckpt` is saved
  mid-validation (Lightning resumes by running that validation again); in the validation's
  evaluation callbacks (kNN), after the epoch;
- during the sanity check before training: at its end, before anything was trained.

Everywhere else (test, validate, predict, the evaluation callbacks after a test: t-SNE, PCA, the
projector) nothing needs saving, so the signal stops the run at once: no results are written and
the fit's checkpoints are intact. A second signal always stops at once, without a checkpoint.
Outside any run (a study between runs, a report being written), `signals_stop_the_command` makes
a signal stop the command the same way.
"""

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from typing_extensions import override

from lightning_ae.callbacks.base import run_folder

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.ckpt"
# A shell reports a process ended by signal N with the exit status this base plus N.
SIGNAL_EXIT_BASE = 0x80
SIGNALS = (signal.SIGINT, signal.SIGTERM)
# How a command that stopped is resumed: a fit names its checkpoint, `pretrain` and `study` find theirs.
RESUME_FIT = "Resume with the same command and --ckpt_path last (or --ckpt_path {checkpoint})."
RESUME_RERUN = "Run the same command again: it resumes from there."


class RunInterrupted(BaseException):
    """A run stopped on a signal; `checkpoint` is where training can resume (None when nothing was saved);
    `exit_code` is what a shell reports for the signal.

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
        stage: str | None = "fit",
        at_once: bool = False,
    ) -> None:
        self.signal_name, self.checkpoint, self.epoch, self.step, self.stage, self.at_once = (
            signal_name,
            checkpoint,
            epoch,
            step,
            stage,
            at_once,
        )
        self.exit_code = SIGNAL_EXIT_BASE + signal_number
        super().__init__(self.explain(RESUME_FIT))

    def explain(self, resume: str) -> str:
        """The message, with `resume` (RESUME_FIT or RESUME_RERUN) saying how the command that stopped resumes."""
        name = self.signal_name
        if self.checkpoint is not None:
            return (
                f"{name} received: stopped in epoch {self.epoch} after optimizer step {self.step}; checkpoint saved "
                f"to {self.checkpoint}. " + resume.format(checkpoint=self.checkpoint)
            )
        if self.stage is None:
            return (
                f"{name} received: stopped at once; whatever had finished (runs, stages, checkpoints) is kept. "
                + RESUME_RERUN.replace("from there", "where it stopped")
            )
        if self.stage == "fit" and self.at_once:
            return (
                f"{name} received again: stopped at once in epoch {self.epoch}; nothing was saved after the last "
                "checkpoint. " + resume.format(checkpoint="<a file in checkpoints/>")
            )
        if self.stage == "fit":
            return (
                f"{name} received: stopped before training started; nothing was trained or saved. "
                "Run the same command again."
            )
        after_fit = " (a fit that had finished resumes with --ckpt_path last and goes straight to its test)"
        return (
            f"{name} received: stopped during {self.stage}; no {self.stage} results were written. Run the same "
            f"command again{after_fit if resume == RESUME_FIT else ''}."
        )


def _install(handler: Any) -> dict[signal.Signals, Any]:
    """Make `handler` the handler of SIGINT and SIGTERM; the handlers it replaced (none off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return {}  # signal handlers can only be set from the main thread
    return {number: signal.signal(number, handler) for number in SIGNALS}


def _give_back(previous: dict[signal.Signals, Any]) -> None:
    for number, handler in previous.items():
        signal.signal(number, handler)


@contextmanager
def signals_stop_the_command() -> Iterator[None]:
    """For a whole command: a signal outside a run's own handling (loading data, between a study's runs, writing a
    report) stops it at once with `RunInterrupted`, not Python's traceback or a kill in the middle of a line."""

    def stop(number: int, frame: Any) -> None:
        raise RunInterrupted(signal.Signals(number).name, number, None, 0, 0, stage=None)

    previous = _install(stop)
    try:
        yield
    finally:
        _give_back(previous)


class GracefulInterruption(Callback):
    """On SIGINT or SIGTERM: in training, finish the step or batch, save `last.ckpt` and raise `RunInterrupted`;
    anywhere else, raise it at once."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}
        self._stopped_at: tuple[int, int] | None = None
        self._trainer: pl.Trainer | None = None
        self._training = False  # a fit between its sanity check and its end: a signal waits for a safe point
        self._mid_validation = False  # saving a checkpoint in the middle of a fit's validation

    def _install(self, trainer: pl.Trainer, training: bool) -> None:
        """Replace the handlers (Lightning's too: its SIGTERM handler, registered just before a stage runs, only
        sets a flag that ends the run later with a SystemExit of status 0)."""
        self._trainer, self._training = trainer, training
        if not self._previous:
            self._previous = _install(self._handle)

    def _handle(self, number: int, frame: Any) -> None:
        name = signal.Signals(number)
        if self._training and self.received is None:
            self.received = name
            log.warning("%s received: stopping after this step (send it again: stop at once)", name.name)
            return
        # Asked twice, or outside training where nothing needs saving: stop now.
        again, self.received = self.received is not None, None
        trainer = self._trainer
        stage = "fit" if trainer is None or trainer.state.fn is None else trainer.state.fn.value
        self._restore()
        epoch, step = (trainer.current_epoch, trainer.global_step) if trainer is not None else (0, 0)
        raise RunInterrupted(name.name, number, None, epoch, step, stage, at_once=again or stage == "fit")

    def _restore(self) -> None:
        _give_back(self._previous)
        self._previous, self._training = {}, False

    def _stop(self, checkpoint: Path | None, epoch: int, step: int, stage: str) -> None:
        assert self.received is not None
        received, self.received = self.received, None
        self._restore()
        raise RunInterrupted(received.name, int(received), checkpoint, epoch, step, stage)

    # -- fit: installed before the sanity check, acted on after a training step or validation batch --

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.received, self._stopped_at = None, None

    @override
    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(trainer, training=True)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(trainer, training=True)  # again: without a sanity check, the first hook after Lightning's

    @override
    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.received is not None:
            self._stop(None, trainer.current_epoch, trainer.global_step, "fit")

    def _save_and_stop(self, trainer: pl.Trainer, at: tuple[int, int] | None = None) -> None:
        """Save `last.ckpt` where training is now; report the stop at `at` (epoch, step), else here."""
        checkpoint = self.checkpoint_path(trainer)
        trainer.save_checkpoint(checkpoint, weights_only=False)  # the whole state: optimizer, loops, callbacks
        epoch, step = at or (trainer.current_epoch, trainer.global_step)
        self._stop(checkpoint, epoch, step, "fit")

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.received is not None:
            self._save_and_stop(trainer)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A signal during the epoch's evaluation callbacks (kNN on the validation codes). ModelCheckpoint runs
        # after this hook and weighs the epoch's val/loss for the best checkpoint: stop the fit after the epoch,
        # and act when training has ended.
        if self.received is not None:
            trainer.should_stop = True
            self._stopped_at = (trainer.current_epoch, trainer.global_step)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.received is not None:  # saved at the end of the epoch: a resume starts the next one
            self._save_and_stop(trainer, self._stopped_at)
        # Here, not in on_fit_end: Lightning puts back the handlers it found only when the stage ends, and
        # on_fit_end runs after that, where giving back Lightning's handler would leave it installed for good
        # (a process that runs several fits, a study, would then only log a SIGTERM, never stop).
        self._restore()

    @override
    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        if self.received is None or trainer.state.fn != "fit":
            return
        if trainer.sanity_checking:
            self._stop(None, trainer.current_epoch, trainer.global_step, "fit")
        # Mid-validation, so that a long validation (a large val split) stops after one batch, not at its end.
        self._mid_validation = True
        try:
            self._save_and_stop(trainer)
        finally:
            self._mid_validation = False

    @override
    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        if not self._mid_validation:
            return
        # Lightning resumes a checkpoint whose validation progress reads "a batch started, none processed" by
        # running that validation again from its start (its RESTARTED_MID_EVALUATION); saved at a batch's end,
        # the progress would read "processed", and the resumed fit would skip the validation (and the epoch's
        # val/loss, early stopping and best checkpoint with it). Say that validation restarts from its first batch.
        progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.val_loop.batch_progress")
        if progress is None:
            return
        total = progress["total"]
        total["processed"] = total["completed"] = total["completed"] - progress["current"]["completed"]
        total["ready"] = total["started"] = total["completed"] + 1
        progress["current"].update(ready=1, started=1, processed=0, completed=0)
        progress["is_last_batch"] = False

    # -- test, validate and predict (the test after a fit included): stopped at once, nothing saved --

    def _evaluation_start(self, trainer: pl.Trainer) -> None:
        if trainer.state.fn != "fit":  # a fit's validation is covered by the fit's handlers
            self.received = None
            self._install(trainer, training=False)

    @override
    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._evaluation_start(trainer)

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._evaluation_start(trainer)

    @override
    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._evaluation_start(trainer)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # After every callback's on_test_end (the evaluation callbacks run there): the stage is over.
        if stage != "fit":
            self._restore()

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()

    @staticmethod
    def checkpoint_path(trainer: pl.Trainer) -> Path:
        """`last.ckpt` beside the ModelCheckpoint's files (where `--ckpt_path last` looks), else in the log folder."""
        callback = trainer.checkpoint_callback
        folder = getattr(callback, "dirpath", None) or run_folder(trainer) / "checkpoints"
        return Path(folder) / LAST_CHECKPOINT
