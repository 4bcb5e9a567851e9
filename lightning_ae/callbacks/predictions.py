"""`PredictionWriter`: what `lightning-ae predict` computes, saved as one file of tensors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from typing_extensions import override

from lightning_ae.callbacks.base import EvaluationCallback
from lightning_ae.checks import check_path_segment
from lightning_ae.files import atomic_write


class PredictionWriter(BasePredictionWriter):
    """Writes the codes, reconstructions and labels of the predicted split (the test set) to `filename`.

    The file holds only tensors: `torch.load(path, weights_only=True)` reads it.
    Under DDP each rank writes its own contiguous shard to `<stem>-rank<R>.pt`.
    """

    def __init__(self, filename: str = "predictions.pt") -> None:
        super().__init__(write_interval="epoch")
        if not filename.endswith(".pt"):
            raise ValueError(f"filename={filename!r} is not valid; valid: a name ending in .pt.")
        self.filename = check_path_segment("filename", filename)

    @override
    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Sequence[Any], batch_indices: Any
    ) -> None:
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        merged = {key: torch.cat([batch[key].cpu() for batch in batches]) for key in batches[0]} if batches else {}
        name = self.filename
        if trainer.world_size > 1:
            name = name.removesuffix(".pt") + f"-rank{trainer.global_rank}.pt"
        with atomic_write(EvaluationCallback.output_dir(trainer) / name) as handle:
            torch.save(merged, handle)
