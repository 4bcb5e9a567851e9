"""`TensorDataModule`: train/val/test splits already in memory as tensors (e.g. the codes of a trained layer).

Greedy layer-wise pre-training trains each next autoencoder on the codes of the layer
below; those codes are computed once and served from here, batched like ImageDataModule
(same `(input, target, label)` batches, same seeded shuffling and DDP sharding), so the
same models and evaluation callbacks work on them.
"""

from __future__ import annotations

import pytorch_lightning as pl
from torch import Tensor

from lightning_ae.data.datamodule import STAGES
from lightning_ae.data.loader import EpochBatchSampler, InMemoryLoader, SplitData


class TensorDataModule(pl.LightningDataModule):
    """Splits given as `{stage: (inputs (N, D), labels (N,))}` for "train", "val" and "test"."""

    def __init__(
        self,
        splits: dict[str, tuple[Tensor, Tensor]],
        class_names: tuple[str, ...],
        batch_size: int = 32,
        eval_batch_size: int = 1000,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if set(splits) != set(STAGES):
            raise ValueError(f"splits must be exactly {list(STAGES)}; got {sorted(splits)}.")
        widths = {tuple(inputs.shape[1:]) for inputs, _ in splits.values()}
        if len(widths) != 1:
            raise ValueError(f"the splits' inputs differ in shape: {sorted(widths)}.")
        for stage, (inputs, labels) in splits.items():
            if len(inputs) != len(labels) or len(inputs) == 0:
                raise ValueError(f"split {stage!r}: {len(inputs)} inputs and {len(labels)} labels.")
        self.splits = {stage: SplitData(images=x, labels=y.long()) for stage, (x, y) in splits.items()}
        self.input_shape: tuple[int, ...] = widths.pop()
        self.class_names, self.batch_size, self.eval_batch_size = class_names, batch_size, eval_batch_size
        self.seed = seed

    def split(self, stage: str) -> SplitData:
        return self.splits[stage]

    def training_means(self) -> tuple[Tensor, Tensor]:
        """(mean input, mean target) of the training split, as ImageDataModule gives them."""
        return self.splits["train"].means(seed=self.seed)

    def _loader(self, stage: str, batch_size: int, shuffle: bool) -> InMemoryLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        split = self.splits[stage]
        return InMemoryLoader(split, EpochBatchSampler(len(split), batch_size, shuffle, self.seed, rank, world))

    def train_dataloader(self) -> InMemoryLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> InMemoryLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> InMemoryLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)
