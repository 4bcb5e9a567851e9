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

CUDA graphs (`cuda_graphs: true`, the default; see `lightning_ae.strategies.graphs`): on a CUDA
device the inner updates (every mini-batch of a group but the last) go through static input
buffers: each batch is copied in, and the whole update (the model's `training_step`, backward,
optimizer step) is captured once in a CUDA graph, after 3 eager warm-up updates, and replayed
for the following ones. The last mini-batch of each group still goes through Lightning, eagerly.
Corruption noise is drawn by the loader when it gathers a batch, so it is part of the copied
inputs: fresh at every replay. What `training_step` logs is recorded at capture and refreshed by
each replay. An epoch scheduler (or anything else) changing the optimizer's settings between
groups makes the next inner update capture again. A batch of other shapes runs eagerly.
The inner updates stay eager, with one log line why (a warning, or info where no graph was to be
had: `cuda_graphs: false`, or no CUDA device), for: an optimizer other than SGD (not fused) or
Adam/AdamW with `capturable: true` (a fresh Adam or AdamW is made capturable on a CUDA device:
the same arithmetic, its step count on the device; a resumed one keeps its setting); a "step"
scheduler (a graph would keep the first learning rate); a `training_step` that logs numbers or
metrics rather than one-element tensors; a capture that fails. `training_step` gets the
capture's `batch_idx` at every replay, and Python in it runs once, at capture.

    trainer:
      strategy:
        class_path: lightning_ae.strategies.GroupedSteps
        init_args: {batches_per_step: null, cuda_graphs: true}   # null: about 4,096 images per Lightning step
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.accelerators import CUDAAccelerator, MPSAccelerator
from pytorch_lightning.strategies import SingleDeviceStrategy
from torch import Tensor
from typing_extensions import override

from lightning_ae.strategies.graphs import (
    CaptureFailed,
    StaticStep,
    graph_blocker,
    hyperparameters,
    make_capturable,
)

log = logging.getLogger(__name__)

GROUP_IMAGES = 4096  # images per Lightning step when `batches_per_step` is null

LogCall = tuple[str, Any, tuple, dict[str, Any]]  # one `model.log(name, value, *args, **kwargs)`


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
        entry = held.get(name)
        if entry is None:
            held[name] = [value.detach() * weight, weight, kwargs]  # a new tensor: added to in place below
        else:
            entry[0].add_(value.detach(), alpha=weight)  # one kernel per update (mul, then add, were two)
            entry[1] += weight

    model.log = log  # an instance attribute: it shadows the method until deleted
    try:
        yield
    finally:
        del model.log
    for name, (total, count, kwargs) in held.items():
        real_log(name, total / count, batch_size=count, **kwargs)


@contextmanager
def logs_recorded(model: pl.LightningModule, calls: list[LogCall]) -> Iterator[None]:
    """Record what `model.log` receives in `calls` instead of logging it; the caller replays them.

    In a CUDA graph the Python of `training_step` runs once, at capture: its logged tensors are recorded
    there and the graph refreshes them at every replay; the caller hands them to `model.log` after each.
    """
    shadowed = model.__dict__.get("log")  # the held-means `log` of `logs_held_as_means`, if any

    def log(name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        calls.append((name, value, args, kwargs))

    model.log = log
    try:
        yield
    finally:
        if shadowed is None:
            del model.log
        else:
            model.log = shadowed


def unreplayable(calls: list[LogCall]) -> list[str]:
    """The names logged with values a graph cannot refresh: all but one-element tensors (a number would stay
    the capture's; a torchmetrics Metric would update once, at capture)."""
    return sorted({name for name, value, _, _ in calls if not (isinstance(value, Tensor) and value.numel() == 1)})


class GroupedSteps(SingleDeviceStrategy):
    """One device; `batches_per_step` mini-batches per Lightning step (null: about 4,096 images); on CUDA the
    inner updates replay a CUDA graph unless `cuda_graphs` is false or the run cannot (see the module)."""

    # Device types whose inner updates go through `StaticStep`: captured on CUDA; on another type listed here
    # (the CPU tests add "cpu") the same static-buffer step runs eagerly.
    static_step_devices: tuple[str, ...] = ("cuda",)

    def __init__(
        self, batches_per_step: int | None = None, device: str | None = None, cuda_graphs: bool = True
    ) -> None:
        if batches_per_step is not None and (isinstance(batches_per_step, bool) or batches_per_step < 1):
            raise ValueError(f"batches_per_step={batches_per_step!r}: give a whole number >= 1, or null for automatic.")
        if not isinstance(cuda_graphs, bool):
            raise ValueError(f"cuda_graphs={cuda_graphs!r}: give true or false.")
        # No device: the accelerator's first device (cuda:0 on a GPU machine, else the CPU), as Lightning picks.
        super().__init__(device=device or "cpu")
        self.batches_per_step = batches_per_step
        self.cuda_graphs = cuda_graphs
        self._auto_device = device is None
        self._static: StaticStep[list[LogCall]] | None = None
        self._static_decided = False
        self._step_args: tuple[tuple, dict[str, Any]] = ((), {})  # the current training_step's batch_idx etc.

    @override
    def setup_environment(self) -> None:
        if self._auto_device:
            if isinstance(self.accelerator, CUDAAccelerator):
                self._root_device = torch.device("cuda", torch.cuda.current_device())
            elif isinstance(self.accelerator, MPSAccelerator):
                self._root_device = torch.device("mps", 0)
        super().setup_environment()

    @override
    def setup(self, trainer: pl.Trainer) -> None:
        self._refuse_what_groups_cannot_do(trainer)
        self._static, self._static_decided = None, False  # decided again at this fit's first inner mini-batch
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

    @override
    def process_dataloader(self, dataloader: object) -> object:
        trainer = self.lightning_module.trainer
        if not trainer.training:  # validation, test and predict see plain batches
            return dataloader
        size = self.group_size()
        if hasattr(dataloader, "group"):
            dataloader.group = size
            return dataloader
        return GroupedBatches(dataloader, size) if size > 1 else dataloader

    @override
    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        batch, *rest = args
        if not isinstance(batch, list):
            return super().training_step(batch, *rest, **kwargs)
        *inner, last = batch
        model = self.lightning_module
        per_step = [c.scheduler for c in model.trainer.lr_scheduler_configs if c.interval == "step"]
        self._step_args = (tuple(rest), kwargs)
        with logs_held_as_means(model):
            for number, mini_batch in enumerate(inner):
                static = self._static_step()
                if static is not None and static.fits(mini_batch):
                    # The optimizer's settings can change between groups only (an epoch scheduler, a callback):
                    # checked at a group's first inner update.
                    calls = self._static_update(static, mini_batch, check_settings=number == 0)
                else:  # no static step, or a batch of other shapes (a short last batch)
                    calls = self._update(mini_batch)
                for name, value, log_args, log_kwargs in calls:
                    model.log(name, value, *log_args, **log_kwargs)  # held: logged once per group, as the mean
                for scheduler in per_step:
                    scheduler.step()
        # The last mini-batch goes through Lightning's own optimization (hooks, step count, "step" schedulers).
        return super().training_step(last, *rest, **kwargs)

    def _update(self, batch: Any) -> list[LogCall]:
        """One plain update: the model's `training_step`, then zero_grad, backward, step. Returns what it logged.

        Under a CUDA graph this Python runs once, at capture; `zero_grad(set_to_none=True)` then makes the
        captured backward write fresh gradients at every replay (PyTorch's recipe) instead of adding to old ones.
        """
        model, optimizer = self.lightning_module, self.optimizers[0]
        rest, kwargs = self._step_args
        calls: list[LogCall] = []
        with logs_recorded(model, calls):
            loss = model.training_step(batch, *rest, **kwargs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return calls

    def _static_step(self) -> StaticStep[list[LogCall]] | None:
        """This fit's static step, made at its first inner mini-batch; None (and one log line why) when the
        inner updates stay eager."""
        if self._static_decided:
            return self._static
        self._static_decided = True
        trainer = self.lightning_module.trainer
        device = self.root_device
        capture = device.type == "cuda"
        if capture and self.cuda_graphs and make_capturable(self.optimizers[0]):
            log.info("GroupedSteps: %s made capturable for CUDA graphs.", type(self.optimizers[0]).__name__)
        reason = graph_blocker(
            enabled=self.cuda_graphs,
            device=device,
            precision=str(trainer.precision),
            num_devices=trainer.num_devices * trainer.num_nodes,
            optimizers=self.optimizers,
            step_schedulers=sum(c.interval == "step" for c in trainer.lr_scheduler_configs),
            capture=capture or device.type not in self.static_step_devices,
        )
        if reason is not None:
            self._graphs_off(reason, quiet=not self.cuda_graphs or device.type != "cuda")
            return None
        optimizer = self.optimizers[0]
        self._static = StaticStep(self._update, capture=capture, watch=partial(hyperparameters, optimizer))
        return self._static

    def _static_update(self, static: StaticStep[list[LogCall]], batch: Any, check_settings: bool) -> list[LogCall]:
        first = static.inputs is None  # this fit's first step through it
        try:
            calls = static(batch, check_settings)
        except CaptureFailed as failure:
            self._graphs_off(f"the capture failed ({failure})")
            return self._update(batch)
        if first:  # the first step is eager (a warm-up on CUDA): nothing was captured yet
            if unreplayable(calls):
                names = ", ".join(unreplayable(calls))
                self._graphs_off(f"training_step logs values a graph cannot refresh ({names}): numbers or metrics")
            else:
                how = f"captured in a CUDA graph after {static.warmup} eager steps" if static.capture else "eager"
                log.info("GroupedSteps: inner updates through static buffers (%s).", how)
        return calls

    def _graphs_off(self, reason: str, quiet: bool = False) -> None:
        """The inner updates run eagerly from now on; one log line why (info when asked for, or without CUDA)."""
        self._static = None
        log.log(
            logging.INFO if quiet else logging.WARNING,
            "GroupedSteps: CUDA graphs off, %s; inner updates run eagerly.",
            reason,
        )

    @override
    def teardown(self) -> None:
        if self._static is not None:
            self._static.release()  # the graph's memory pool and the buffers; its counts stay for a look
        super().teardown()
