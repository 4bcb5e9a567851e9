"""Used by tests/test_interruption.py: a callback that signals its own process at a given optimizer step.

It makes "interrupted in the middle of epoch 2" a fixed point of the run instead of a race
with a timer. Given in a config as `class_path: signal_at_step.SignalAtStep` (with
tests/scripts on PYTHONPATH).
"""

import os
import signal

import pytorch_lightning as pl


class SignalAtStep(pl.Callback):
    def __init__(self, step: int, signal_name: str = "SIGTERM") -> None:
        self.step, self.signal_name = step, signal_name
        self.sent = False

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if not self.sent and trainer.global_step >= self.step:
            self.sent = True
            os.kill(os.getpid(), getattr(signal, self.signal_name))
