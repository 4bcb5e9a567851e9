"""`TrainableModule`: what every model shares, its optimizer and scheduler from the config.

The optimizer and the scheduler arrive as Lightning's callables (`OptimizerCallable`,
`LRSchedulerCallable`): the CLI turns `optimizer: {class_path: torch.optim.Adam, init_args:
{lr: 0.001}}` into a function of the parameters, so one `configure_optimizers` serves every
model and every config. Optimization is Lightning's automatic one; the speed path
(several mini-batches per Lightning step) is a strategy, `lightning_ae.strategies.GroupedSteps`.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable

__all__ = ["LRSchedulerCallable", "OptimizerCallable", "TrainableModule"]


class TrainableModule(pl.LightningModule):
    def __init__(self, optimizer: OptimizerCallable, scheduler: LRSchedulerCallable | None = None) -> None:
        super().__init__()
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler

    def configure_optimizers(self) -> Any:
        """The optimizer over the trainable parameters, and the scheduler when one is configured.

        Schedulers step once per epoch (Lightning's default interval); a ReduceLROnPlateau watches the
        epoch's `val/loss` (other schedulers ignore `monitor`).
        """
        optimizer = self.optimizer_factory([p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}
