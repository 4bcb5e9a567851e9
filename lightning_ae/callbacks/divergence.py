"""`DivergenceGuard`: stop a run the moment its loss or weights stop being finite, and say what to try."""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)


class DivergenceGuard(pl.Callback):
    """Checks the training loss after every training step (a group of mini-batches counts as one)
    and the weights after every epoch; on a NaN or an infinity it stops training at once.

    `diverged` then holds where it happened (epoch, step, what was non-finite) and `message`
    the advice; `ResultsJSON` records the run as "diverged" with no metric values, the CLI skips
    the test and exits with status 3, and a study lists the run as diverged.
    """

    def __init__(self) -> None:
        super().__init__()
        self.diverged: dict[str, Any] | None = None

    @property
    def message(self) -> str:
        if self.diverged is None:
            return ""
        d = self.diverged
        saved = " The weights of the last finished epoch are in checkpoints/." if d["epoch"] > 0 else ""
        return (
            f"training diverged at epoch {d['epoch']}, step {d['step']}: {d['what']} is not finite. "
            f"Try a lower learning rate (e.g. --model.init_args.optimizer.lr 0.1) or Adam.{saved}"
        )

    def _stop(self, trainer: pl.Trainer, what: str) -> None:
        self.diverged = {"epoch": trainer.current_epoch, "step": trainer.global_step, "what": what}
        trainer.should_stop = True
        log.error("lightning-ae: %s", self.message)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if self.diverged is None and isinstance(loss, torch.Tensor) and not torch.isfinite(loss).all():
            self._stop(trainer, "the training loss")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.diverged is not None:
            return
        for name, parameter in pl_module.named_parameters():
            if not torch.isfinite(parameter).all():
                self._stop(trainer, f"the weight {name}")
                return
