"""`AtomicCheckpointIO`: checkpoints written so that a full disk or a kill never leaves a cut-off one.

Lightning's `TorchCheckpointIO` writes through an fsspec transaction whose temporary file sits in
the system's temporary folder and is then moved, that is copied, into place: a disk that fills
during the copy leaves a truncated checkpoint under the real name (seen: `best-epoch0.ckpt` cut
short by a full output folder). Here the temporary file sits beside the target, is synced, and
replaces it in one rename: readers find the previous checkpoint or the complete new one.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.plugins.io import TorchCheckpointIO

from lightning_ae.files import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose writes go to a temporary file in the same folder, then one rename."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's own path
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_write(path) as handle:
            torch.save(checkpoint, handle)


def use_atomic_checkpoints(trainer: pl.Trainer) -> None:
    """Give `trainer` AtomicCheckpointIO unless the user chose a CheckpointIO of their own."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
