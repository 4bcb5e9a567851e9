"""What the evaluation callbacks share: the data they evaluate on, codes, timing, where files go.

Evaluation runs on global rank 0 only, over whole splits held in memory by the
DataModule, so that under DDP nothing is computed twice and no item is counted twice
(Lightning's distributed samplers pad ranks with duplicates).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from typing_extensions import override

from lightning_ae.data.loader import SplitData


class EvaluationData(Protocol):
    """What a DataModule must offer to be evaluated (MNISTDataModule does)."""

    eval_batch_size: int
    class_names: tuple[str, ...]

    def split(self, stage: str) -> SplitData: ...


class Encoder(Protocol):
    def encode(self, x: Tensor) -> Tensor: ...


def timed(function: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """`function()` and its wall time in seconds (waiting for the GPU when there is one)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - start


@contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """The model in eval mode for the block, then back in the mode it was in (fit goes on after validation)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class EvaluationCallback(pl.Callback):
    """Base of the evaluation callbacks: checks the model and data once, keeps its own timings."""

    def __init__(self) -> None:
        super().__init__()
        self.timings: dict[str, float] = {}

    @property
    def name(self) -> str:
        return type(self).__name__

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not callable(getattr(pl_module, "encode", None)):
            raise TypeError(f"{self.name} needs a model with an encode(x) method; {type(pl_module).__name__} has none.")
        if not callable(getattr(trainer.datamodule, "split", None)):
            raise TypeError(
                f"{self.name} needs a DataModule with split(stage) (such as lightning_ae.data.MNISTDataModule); "
                f"got {type(trainer.datamodule).__name__}."
            )

    @staticmethod
    def data(trainer: pl.Trainer) -> EvaluationData:
        return trainer.datamodule

    @staticmethod
    @torch.no_grad()
    def encode(model: pl.LightningModule, images: Tensor, batch_size: int) -> tuple[Tensor, float]:
        """Codes of `images` on the model's device, and the seconds it took, in eval mode."""
        with evaluating(model):
            return timed(
                lambda: torch.cat([model.encode(chunk.to(model.device)) for chunk in images.split(batch_size)]),
                model.device,
            )

    @staticmethod
    def tensorboard(trainer: pl.Trainer) -> SummaryWriter | None:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                return logger.experiment
        return None

    @staticmethod
    def output_dir(trainer: pl.Trainer) -> Path:
        """The run's log folder (beside the TensorBoard events), where files are written."""
        return run_folder(trainer)


def logging_step(trainer: pl.Trainer) -> int:
    """The step Lightning gives the scalars logged now, for images and embeddings logged beside them.

    It counts Lightning's training steps like `global_step`, but during a fit's validation it
    still lags it by one (the step is counted after validation), so images logged with
    `global_step` would sit one step right of the scalars of the same epoch.
    """
    loop = getattr(trainer, "fit_loop", None)
    return loop.epoch_loop._batches_that_stepped if loop is not None else trainer.global_step


def run_folder(trainer: pl.Trainer) -> Path:
    """Where the run's files go: the logger's folder, as `trainer.log_dir` says, without its collective.

    `trainer.log_dir` broadcasts from rank 0 under DDP, so every rank must call it; callbacks that
    work on rank 0 alone would leave the other ranks one collective behind (a deadlock).
    """
    logger = trainer.logger
    if logger is None:
        return Path(trainer.default_root_dir)
    if isinstance(logger, (TensorBoardLogger, CSVLogger)):
        return Path(logger.log_dir)
    return Path(logger.save_dir or trainer.default_root_dir)


def class_stratified_indices(labels: Tensor, per_class: int, num_classes: int) -> Tensor:
    """The first `per_class` items of each class, classes in order: a fixed, balanced sample."""
    chosen = [torch.nonzero(labels == c).flatten()[:per_class] for c in range(num_classes)]
    return torch.cat(chosen)
