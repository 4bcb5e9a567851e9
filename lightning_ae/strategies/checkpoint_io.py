"""`AtomicCheckpointIO`: checkpoints written so that a full disk or a kill never leaves a cut-off one.

Lightning's `TorchCheckpointIO` writes through an fsspec transaction whose temporary file sits in
the system's temporary folder and is then moved, that is copied, into place: a disk that fills
during the copy leaves a truncated checkpoint under the real name (seen: `best-epoch0.ckpt` cut
short by a full output folder). Here the temporary file sits beside the target, is synced, and
replaces it in one rename: readers find the previous checkpoint or the complete new one.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.plugins.io import TorchCheckpointIO
from typing_extensions import override

from lightning_ae.files import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose writes go to a temporary file in the same folder, then one rename."""

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's own path
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_write(path) as handle:
            try:
                torch.save(checkpoint, handle)
            except RuntimeError as err:
                raise write_failure(err, Path(path)) from err


# What torch's zip writer says when the file stops taking bytes (a full disk): its own text, not the OS error.
TORCH_WRITE_FAILURES = ("unexpected pos", "file write failed", "PytorchStreamWriter failed")
NEARLY_FULL = 64 * 2**20  # bytes free below which a failed write is put down to a full disk


def write_failure(err: RuntimeError, path: Path) -> BaseException:
    """torch's RuntimeError for a checkpoint it could not write on a (nearly) full disk, as the OSError it stands
    for, naming the file; any other RuntimeError as it is."""
    if not any(text in str(err) for text in TORCH_WRITE_FAILURES):
        return err
    try:
        full = shutil.disk_usage(path.parent).free < NEARLY_FULL
    except OSError:
        full = False
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) if full else err


def use_atomic_checkpoints(trainer: pl.Trainer) -> None:
    """Give `trainer` AtomicCheckpointIO unless the user chose a CheckpointIO of their own."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
