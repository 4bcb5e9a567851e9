"""Progress that suits where the output goes: bars redrawn in place on a terminal, one line per epoch elsewhere.

A log file or a CI console keeps every redraw of a bar (make train wrote 65 KB of them for a 72 s
run); there, `EpochLines` prints what an epoch ended with instead.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress import ProgressBar
from typing_extensions import override

BAR_REFRESH_STEPS = 50  # redrawing every step costs about a quarter of a basic-AE epoch on 2 cores


class EpochLines(ProgressBar):
    """One line per epoch (its train and val metrics and its time) and one when the test ends."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._epoch_started = 0.0

    @override
    def disable(self) -> None:
        self._enabled = False

    @override
    def enable(self) -> None:
        self._enabled = True

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_started = time.perf_counter()

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After the epoch's validation (Lightning runs it before this hook): its val/loss is in.
        if not self._enabled or not trainer.is_global_zero:
            return
        metrics = _shown(trainer.callback_metrics, ("train/", "val/"))
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        seconds = time.perf_counter() - self._epoch_started
        print(f"epoch {trainer.current_epoch + 1}{total}: {metrics} ({seconds:.1f} s)", flush=True)


def _shown(metrics: dict[str, Any], prefixes: tuple[str, ...]) -> str:
    values = []
    for key, value in sorted(metrics.items()):
        if key.startswith(prefixes) and "_us_per_image" not in key:
            values.append(f"{key} {float(value):.4g}")
    return ", ".join(values) or "no metrics"


def progress_bar(lines: bool | None = None) -> ProgressBar:
    """Lightning's bar on a terminal, `EpochLines` when the output is not one (or as `lines` says)."""
    if lines is None:
        lines = not sys.stdout.isatty()
    return EpochLines() if lines else TQDMProgressBar(refresh_rate=BAR_REFRESH_STEPS)
