"""`DivergenceGuard`: stop a run whose loss or weights stop being finite, or whose loss explodes, and say what to
try."""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch
from typing_extensions import override

from lightning_ae.callbacks.trivial import learned_metric, trivial_predictor

log = logging.getLogger(__name__)


class DivergenceGuard(pl.Callback):
    """Stops training at once when the run has diverged:

    - the training loss is NaN or infinite (checked after every training step; a group of mini-batches
      counts as one), or a weight is (checked after every epoch);
    - an epoch's mean training loss is more than `factor` times the first epoch's, or more than `factor`
      times the trivial predictor's loss (the mean training image; the class prior): an explosion that
      stays finite (a learning rate of 1e6 gives a BCE of hundreds per pixel) is no result either.

    `diverged` then holds where it happened (epoch, step, what) and `message` the advice; `ResultsJSON`
    records the run as "diverged" with no metric values, the CLI skips the test and exits with status 3,
    and a study lists the run as diverged.

    Args:
        factor: how many times the first epoch's (and the trivial predictor's) loss an epoch's mean
            training loss may reach. A model starts at about the trivial loss (the autoencoders' output
            bias is the mean image) and goes down from there, so 10 leaves room for any run that learns.
    """

    def __init__(self, factor: float = 10.0) -> None:
        super().__init__()
        if isinstance(factor, bool) or not isinstance(factor, int | float) or not 1 < factor < float("inf"):
            raise ValueError(
                f"factor={factor!r} is not valid; valid: a number > 1, how many times the first epoch's (and the "
                "trivial predictor's) loss an epoch's mean training loss may reach before the run counts as diverged."
            )
        self.factor = float(factor)
        self.diverged: dict[str, Any] | None = None
        self.first_epoch_loss: float | None = None
        self.trivial_loss: float | None = None

    @property
    def message(self) -> str:
        if self.diverged is None:
            return ""
        d = self.diverged
        saved = " The weights of the last finished epoch are in checkpoints/." if d["epoch"] > 0 else ""
        return (
            f"training diverged at epoch {d['epoch']}, step {d['step']}: {d['what']}. "
            f"Try a lower learning rate (e.g. --model.init_args.optimizer.lr 0.1) or Adam.{saved}"
        )

    def _stop(self, trainer: pl.Trainer, what: str) -> None:
        self.diverged = {"epoch": trainer.current_epoch, "step": trainer.global_step, "what": what}
        trainer.should_stop = True
        log.error("lightning-ae: %s", self.message)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":  # before a resumed run's checkpoint hands back its first epoch's loss
            self.diverged, self.first_epoch_loss = None, None

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        figures = trivial_predictor(trainer, pl_module)
        value = None if figures is None else figures.get(learned_metric(pl_module))
        self.trivial_loss = value if isinstance(value, float) and value > 0 else None

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if self.diverged is None and isinstance(loss, torch.Tensor) and not torch.isfinite(loss).all():
            self._stop(trainer, "the training loss is not finite")

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.diverged is not None:
            return
        for name, parameter in pl_module.named_parameters():
            if not torch.isfinite(parameter).all():
                self._stop(trainer, f"the weight {name} is not finite")
                return
        loss = trainer.callback_metrics.get("train/loss")
        if loss is None:
            return
        loss = float(loss)
        if self.trivial_loss is not None and loss > self.factor * self.trivial_loss:
            self._stop(
                trainer,
                f"the epoch's mean training loss {loss:.4g} is over {self.factor:g} times the trivial predictor's "
                f"{self.trivial_loss:.4g}",
            )
        elif self.first_epoch_loss is not None and loss > self.factor * self.first_epoch_loss:
            self._stop(
                trainer,
                f"the epoch's mean training loss {loss:.4g} is over {self.factor:g} times the first epoch's "
                f"{self.first_epoch_loss:.4g}",
            )
        elif self.first_epoch_loss is None:
            self.first_epoch_loss = loss

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"first_epoch_loss": self.first_epoch_loss}  # a resumed run keeps comparing with its own first epoch

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.first_epoch_loss = state_dict.get("first_epoch_loss")
