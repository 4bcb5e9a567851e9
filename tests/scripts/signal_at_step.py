"""Used by tests/test_interruption.py: a callback that signals its own process at a given optimizer step.

It makes "interrupted in the middle of epoch 2" a fixed point of the run instead of a race
with a timer. Given in a config as `class_path: signal_at_step.SignalAtStep` (with
tests/scripts on PYTHONPATH).
"""

import os
import signal

import pytorch_lightning as pl


class SignalAtStep(pl.Callback):
    """Signals at the end of the training batch that reaches optimizer step `step` (`stage="train"`), or of the
    first validation batch once it is reached (`"validation"`, the sanity check excluded), or of the first test
    batch (`"test"`), or when the test ends, before the evaluation callbacks listed after it run (`"evaluation"`).
    `times=2` sends the signal twice in a row (a user who presses Ctrl+C again)."""

    def __init__(self, step: int, signal_name: str = "SIGTERM", stage: str = "train", times: int = 1) -> None:
        self.step, self.signal_name, self.stage, self.times = step, signal_name, stage, times
        self.sent = False

    def _send(self, trainer: pl.Trainer, stage: str) -> None:
        if not self.sent and stage == self.stage and trainer.global_step >= self.step:
            self.sent = True
            for _ in range(self.times):
                os.kill(os.getpid(), getattr(signal, self.signal_name))

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        self._send(trainer, "train")

    def on_validation_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if not trainer.sanity_checking:
            self._send(trainer, "validation")

    def on_test_batch_end(self, trainer: pl.Trainer, *args) -> None:
        self._send(trainer, "test")

    def on_test_end(self, trainer: pl.Trainer, *args) -> None:
        self._send(trainer, "evaluation")
