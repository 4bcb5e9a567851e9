"""`TrainableModule`: what every model shares, its optimizer and scheduler from the config.

The optimizer and the scheduler arrive as Lightning's callables (`OptimizerCallable`,
`LRSchedulerCallable`): the CLI turns `optimizer: {class_path: torch.optim.Adam, init_args:
{lr: 0.001}}` into a function of the parameters, so one `configure_optimizers` serves every
model and every config. Optimization is Lightning's automatic one; the speed path
(several mini-batches per Lightning step) is a strategy, `lightning_ae.strategies.GroupedSteps`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from typing_extensions import override

__all__ = [
    "LRSchedulerCallable",
    "OptimizerCallable",
    "TrainableModule",
    "adam_lr1e3",
    "adam_lr3e3",
    "reduce_lr_on_plateau",
]


# The measured recipe's optimizers and schedule, the models' defaults (the configs spell the same out in YAML).
def adam_lr3e3(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The MLP autoencoders' recipe: Adam, learning rate 3e-3."""
    return torch.optim.Adam(params, lr=3e-3)


def adam_lr1e3(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The conv autoencoder's and the classifier's recipe: Adam, learning rate 1e-3."""
    return torch.optim.Adam(params, lr=1e-3)


def reduce_lr_on_plateau(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    """The recipe's schedule: the learning rate times 0.3 when `val/loss` has not improved (by 0.1%) for 2 epochs."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.3, patience=2, threshold=1e-3)


class TrainableModule(pl.LightningModule):
    def __init__(
        self, optimizer: OptimizerCallable = adam_lr1e3, scheduler: LRSchedulerCallable | None = reduce_lr_on_plateau
    ) -> None:
        super().__init__()
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler

    @override
    def configure_optimizers(self) -> Any:
        """The optimizer over the trainable parameters, and the scheduler when one is configured.

        Schedulers step once per epoch (Lightning's default interval); a ReduceLROnPlateau watches the
        epoch's `val/loss` (other schedulers ignore `monitor`). A fit without validation has no `val/loss`:
        Lightning then warns and leaves the learning rate as it is (`strict: False`), rather than stopping a
        run that only left out the default schedule's signal.
        """
        optimizer = self.optimizer_factory([p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss", "strict": False},
        }
