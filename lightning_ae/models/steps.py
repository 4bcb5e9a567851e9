"""`GroupedSteps`: one optimizer step per mini-batch, several mini-batches per Lightning step.

Lightning spends roughly a millisecond of hooks, logging and bookkeeping on every
training step. For the homework's tiny models at batch 32 a step computes in about half
that, so the trainer would cost more than the model. The DataModule can therefore hand
the model a *group* of consecutive mini-batches per Lightning step (`group_batches`);
this mixin makes one optimizer update per mini-batch, in order, exactly as a plain loop
over the same batches would, so the updates (and the weights after an epoch) are the
same, and Lightning's per-step cost is paid once per group.

Optimization is manual (`automatic_optimization = False`): `optimizer.step()` is called
once per mini-batch, and `trainer.global_step` counts those updates. Learning-rate
schedulers are stepped as their config's `interval` says: after every update ("step",
e.g. OneCycleLR) or at the end of each epoch ("epoch", the default; ReduceLROnPlateau
with `val/loss`).
"""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
from pytorch_lightning.strategies import SingleDeviceStrategy
from torch import Tensor
from torch.optim.lr_scheduler import ReduceLROnPlateau

Batch = tuple[Tensor, Tensor, Tensor]


class GroupedSteps(pl.LightningModule):
    """A LightningModule whose `training_loss(batch)` is minimised one mini-batch at a time."""

    accepts_batch_groups = True  # read by the DataModules (which never import models)
    # On one device in float32, backpropagate with loss.backward() instead of manual_backward(): the
    # same gradients without Lightning's per-call hooks (on_before_backward/on_after_backward are then
    # not called), which cost about 0.1 ms per update (0.2 s per basic-AE epoch at batch 32).
    lean_backward = True

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_loss(self, batch: Batch) -> Tensor:
        raise NotImplementedError

    def training_step(self, batch: Batch | Sequence[Batch], batch_idx: int) -> Tensor:
        group = batch if isinstance(batch, list) else [batch]
        optimizer = self.optimizers()
        lean = self.lean_backward and self._plain_float32_single_device()
        per_step = [c.scheduler for c in self.trainer.lr_scheduler_configs if c.interval == "step"]
        total, count = 0.0, 0
        for inputs, target, labels in group:
            loss = self.training_loss((inputs, target, labels))
            optimizer.zero_grad()
            if lean:
                loss.backward()
            else:
                self.manual_backward(loss)
            optimizer.step()
            for scheduler in per_step:
                scheduler.step()
            total = total + loss.detach() * len(inputs)
            count += len(inputs)
        # One logged value per group (no sync, no .item()): Lightning averages it over the epoch.
        mean = total / count
        self.log("train/loss", mean, on_step=False, on_epoch=True, prog_bar=True, batch_size=count, sync_dist=True)
        return mean

    def configure_optimizers(self):
        """The optimizer over the trainable parameters, and the scheduler when one is configured.

        Subclasses set `optimizer_factory` and `scheduler_factory` (from their `optimizer` and `scheduler`
        arguments). A ReduceLROnPlateau watches `val/loss` (Lightning ignores a `monitor` under manual optimization).
        """
        optimizer = self.optimizer_factory([p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer)}}

    def _plain_float32_single_device(self) -> bool:
        trainer = self.trainer
        return isinstance(trainer.strategy, SingleDeviceStrategy) and trainer.precision in ("32-true", "32")

    def on_train_epoch_end(self) -> None:
        for config in self.trainer.lr_scheduler_configs:
            if config.interval != "epoch":
                continue
            if isinstance(config.scheduler, ReduceLROnPlateau):
                if "val/loss" in self.trainer.callback_metrics:
                    config.scheduler.step(self.trainer.callback_metrics["val/loss"])
            else:
                config.scheduler.step()
