"""Run by tests/test_ddp.py: 2-process CPU DDP over the DataModule; each rank writes what it saw.

Lightning's DDP launcher starts the second process by re-running this script, so it
must be a file, not `python -c`.
"""

import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

from lightning_ae.data import ImageDataModule


class ShardProbe(pl.LightningModule):
    """A linear AE that records a fingerprint of every training and validation input it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(784, 784)
        self.seen: dict[str, list[float]] = {"train": [], "val": []}
        self.fingerprint = torch.randn(784, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def _record(self, stage: str, inputs: torch.Tensor) -> None:
        self.seen[stage] += (inputs.double() @ self.fingerprint).tolist()

    def training_step(self, batch, batch_idx):
        inputs, target, _ = batch
        self._record("train", inputs)
        return torch.nn.functional.mse_loss(self.layer(inputs), target)

    def validation_step(self, batch, batch_idx):
        self._record("val", batch[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def on_fit_end(self) -> None:
        out = Path(sys.argv[1]) / f"rank{self.global_rank}.json"
        weights = self.layer.weight.detach().double().sum().item()
        out.write_text(json.dumps({"seen": self.seen, "world_size": self.trainer.world_size, "weights": weights}))


if __name__ == "__main__":
    datamodule = ImageDataModule(train_subset=2000, batch_size=100, eval_batch_size=700)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(ShardProbe(), datamodule=datamodule)
