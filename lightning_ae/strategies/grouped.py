"""`GroupedSteps`: the speed path, several mini-batches per Lightning step, one optimizer update each.

Lightning spends roughly a millisecond of hooks, logging and bookkeeping on every training
step. For the homework's tiny models at batch 32 a step computes in about half that, so the
trainer would cost more than the model. With this strategy the training loader hands out
*groups* of consecutive mini-batches, and each Lightning step makes one update per
mini-batch, in order, exactly as a plain loop over the same batches would: the weights after
an epoch are the same, and Lightning's per-step cost is paid once per group.

Models stay ordinary Lightning (automatic optimization, `training_step` returns the loss).
For each group, this strategy runs the model's `training_step` and a plain
`zero_grad`/`backward`/`step` on every mini-batch but the last, then hands the last one to
Lightning, which optimizes it as usual. What that means:

- `trainer.global_step`, `max_steps`, `log_every_n_steps` and `val_check_interval` count
  Lightning steps, i.e. groups, consistently.
- Lightning's hooks run once per group: `on_train_batch_start/end` see the whole group (a
  list of batches), and `on_before_backward`, `on_after_backward`, `on_before_zero_grad` and
  `on_before_optimizer_step` run for the last mini-batch of each group only.
- Schedulers: "epoch" ones are stepped by Lightning (ReduceLROnPlateau on `val/loss`); "step"
  ones after every update, inside groups too.
- Logging: what `training_step` logs for the mini-batches before the last is held and logged
  once per group, as its batch-size-weighted mean (Lightning's `self.log` costs about half a
  millisecond a call, as much as a basic-AE update at batch 32). Epoch values are unchanged:
  Lightning's epoch mean weighs each logged value by its batch size.

Its limits, each refused at fit start with the reason: one device, float32, no gradient
clipping, no gradient accumulation, automatic optimization, step schedulers with frequency 1.
Use Lightning's default strategy (drop `trainer.strategy`) for any of those.

    trainer:
      strategy:
        class_path: lightning_ae.strategies.GroupedSteps
        init_args: {batches_per_step: null}   # null: about 4,096 images per Lightning step
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.accelerators import CUDAAccelerator, MPSAccelerator
from pytorch_lightning.strategies import SingleDeviceStrategy
from torch import Tensor

GROUP_IMAGES = 4096  # images per Lightning step when `batches_per_step` is null


class GroupedBatches:
    """Any iterable of batches, handed out as lists of up to `size` consecutive batches.

    lightning-ae's own loaders group themselves (they have a `group` attribute), which keeps
    their mid-epoch resume exact; this wrapper serves any other loader.
    """

    def __init__(self, loader: Iterable, size: int) -> None:
        self.loader, self.size = loader, size
        self.sampler = getattr(loader, "sampler", None)  # Lightning calls sampler.set_epoch through this

    def __len__(self) -> int:
        return math.ceil(len(self.loader) / self.size)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list]:
        group: list = []
        for batch in self.loader:
            group.append(batch)
            if len(group) == self.size:
                yield group
                group = []
        if group:
            yield group


@contextmanager
def logs_held_as_means(model: pl.LightningModule) -> Iterator[None]:
    """Hold the scalar tensors `model.log` receives; on exit, log each name once: the batch-size-weighted mean.

    Anything else (a torchmetrics Metric, a number) goes straight to Lightning.
    """
    real_log = model.log
    held: dict[str, list[Any]] = {}  # name -> [weighted sum, total batch size, the call's other arguments]

    def log(name: str, value: Any, *args: Any, batch_size: int | None = None, **kwargs: Any) -> None:
        if args or not isinstance(value, Tensor) or value.numel() != 1:
            real_log(name, value, *args, batch_size=batch_size, **kwargs)
            return
        weight = batch_size or 1
        entry = held.setdefault(name, [0.0, 0, kwargs])
        entry[0] = entry[0] + value.detach() * weight
        entry[1] += weight

    model.log = log  # an instance attribute: it shadows the method until deleted
    try:
        yield
    finally:
        del model.log
    for name, (total, count, kwargs) in held.items():
        real_log(name, total / count, batch_size=count, **kwargs)


class GroupedSteps(SingleDeviceStrategy):
    """One device; `batches_per_step` mini-batches per Lightning step (null: about 4,096 images)."""

    def __init__(self, batches_per_step: int | None = None, device: str | None = None) -> None:
        if batches_per_step is not None and (isinstance(batches_per_step, bool) or batches_per_step < 1):
            raise ValueError(f"batches_per_step={batches_per_step!r}: give a whole number >= 1, or null for automatic.")
        # No device: the accelerator's first device (cuda:0 on a GPU machine, else the CPU), as Lightning picks.
        super().__init__(device=device or "cpu")
        self.batches_per_step = batches_per_step
        self._auto_device = device is None

    def setup_environment(self) -> None:
        if self._auto_device:
            if isinstance(self.accelerator, CUDAAccelerator):
                self._root_device = torch.device("cuda", torch.cuda.current_device())
            elif isinstance(self.accelerator, MPSAccelerator):
                self._root_device = torch.device("mps", 0)
        super().setup_environment()

    def setup(self, trainer: pl.Trainer) -> None:
        self._refuse_what_groups_cannot_do(trainer)
        super().setup(trainer)
        for config in trainer.lr_scheduler_configs:
            if config.interval == "step" and config.frequency != 1:
                raise ValueError(
                    f"GroupedSteps steps a 'step' scheduler after every update; this one has frequency "
                    f"{config.frequency}. Use frequency 1, or Lightning's default strategy (drop trainer.strategy)."
                )

    @staticmethod
    def _refuse_what_groups_cannot_do(trainer: pl.Trainer) -> None:
        model = trainer.lightning_module
        limits = [
            (trainer.num_devices == 1 and trainer.num_nodes == 1, "runs on one device"),
            (trainer.precision in ("32-true", "32"), f"trains in float32 (precision is {trainer.precision!r})"),
            (not trainer.gradient_clip_val, "cannot clip gradients (gradient_clip_val is set)"),
            (trainer.accumulate_grad_batches == 1, "cannot accumulate gradients (accumulate_grad_batches > 1)"),
            (model is None or model.automatic_optimization, "needs a model with automatic optimization"),
        ]
        for holds, reason in limits:
            if not holds:
                raise ValueError(
                    f"trainer.strategy GroupedSteps {reason}: every mini-batch but the last of a group is updated "
                    "outside Lightning. Drop trainer.strategy (Lightning's default) for this run."
                )

    def group_size(self) -> int:
        if self.batches_per_step is not None:
            return self.batches_per_step
        batch_size = getattr(self.lightning_module.trainer.datamodule, "batch_size", None)
        return max(1, GROUP_IMAGES // batch_size) if isinstance(batch_size, int) and batch_size > 0 else 1

    def process_dataloader(self, dataloader: object) -> object:
        trainer = self.lightning_module.trainer
        if not trainer.training:  # validation, test and predict see plain batches
            return dataloader
        size = self.group_size()
        if hasattr(dataloader, "group"):
            dataloader.group = size
            return dataloader
        return GroupedBatches(dataloader, size) if size > 1 else dataloader

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        batch, *rest = args
        if not isinstance(batch, list):
            return super().training_step(batch, *rest, **kwargs)
        *inner, last = batch
        model = self.lightning_module
        optimizer = self.optimizers[0]
        per_step = [c.scheduler for c in model.trainer.lr_scheduler_configs if c.interval == "step"]
        with logs_held_as_means(model):
            for mini_batch in inner:
                loss = model.training_step(mini_batch, *rest, **kwargs)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                for scheduler in per_step:
                    scheduler.step()
        # The last mini-batch goes through Lightning's own optimization (hooks, step count, "step" schedulers).
        return super().training_step(last, *rest, **kwargs)
