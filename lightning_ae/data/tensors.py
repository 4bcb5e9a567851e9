"""`TensorDataModule`: train/val/test splits already in memory as tensors (e.g. the codes of a trained layer).

Greedy layer-wise pre-training trains each next autoencoder on the codes of the layer
below; those codes are computed once and served from here, batched like ImageDataModule
(same `(input, target, label)` batches, same seeded shuffling and DDP sharding), so the
same models and evaluation callbacks work on them. With a `corruption` (stacked denoising
autoencoders) the inputs are corrupted and the targets clean, as in ImageDataModule: fresh
noise per training batch, validation and test inputs corrupted once from the seed.
"""

from __future__ import annotations

import pytorch_lightning as pl
from torch import Tensor
from typing_extensions import override

from lightning_ae.data.corruptions import Corruption
from lightning_ae.data.datamodule import STAGES
from lightning_ae.data.loader import EpochBatchSampler, InMemoryLoader, SplitData, derive_seed

_FIXED_NOISE = 21  # the purpose in derive_seed of the evaluation splits' fixed noise


class TensorDataModule(pl.LightningDataModule):
    """Splits given as `{stage: (inputs (N, D), labels (N,))}` for "train", "val" and "test"."""

    def __init__(
        self,
        splits: dict[str, tuple[Tensor, Tensor]],
        class_names: tuple[str, ...],
        batch_size: int = 32,
        eval_batch_size: int = 1000,
        seed: int = 0,
        corruption: Corruption | None = None,
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
        self.input_shape: tuple[int, ...] = widths.pop()
        if corruption is not None and not corruption.any_values:
            raise ValueError(
                f"{corruption!r} corrupts images (values in [0, 1], pixel neighbourhoods); these inputs are any "
                "vectors (e.g. codes): use masking, which zeroes single values of any range."
            )
        self.splits = {
            stage: SplitData(images=x, labels=y.long(), corruption=corruption) for stage, (x, y) in splits.items()
        }
        if corruption is not None:
            for number, stage in enumerate(STAGES):
                if stage != "train":
                    self.splits[stage].fixed_inputs = self.splits[stage].corrupted_once(
                        derive_seed(seed, _FIXED_NOISE, number)
                    )
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

    @override
    def train_dataloader(self) -> InMemoryLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    @override
    def val_dataloader(self) -> InMemoryLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    @override
    def test_dataloader(self) -> InMemoryLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)
