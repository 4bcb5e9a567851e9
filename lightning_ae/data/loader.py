"""In-memory batching: a split lives in one tensor and a batch is one index gather.

MNIST fits in memory many times over, so the per-item `__getitem__` and `collate`
of a `DataLoader` are pure overhead here. `InMemoryLoader` is a plain iterable
that Lightning accepts as a dataloader: it shuffles with a seeded generator per
epoch (Lightning calls `loader.sampler.set_epoch`), shards across DDP ranks itself,
and draws fresh corruption noise for every training batch from a generator seeded by
(seed, epoch, rank, batch), so an epoch is reproducible and a resumed run sees the same noise.
It is resumable mid-epoch (Lightning saves and restores its `state_dict` with the loops):
a run restored from a checkpoint taken after step n of an epoch goes on with step n + 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from lightning_ae.data.corruptions import Corruption

Batch = tuple[Tensor, Tensor, Tensor]


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from several integers (seed, epoch, rank, purpose...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint64)[0] >> 1)


@dataclass
class SplitData:
    """One split in memory and how to turn index slices into `(input, target, label)` batches.

    - plain: input is target (the same tensor: no copy), the clean image;
    - corrupted: the input is corrupted, the target clean. `fixed_inputs` holds inputs
      corrupted once with a fixed seed (validation/test); `corruption` draws fresh noise
      per batch (training);
    - pairs: item i is the pair (objects[i], partners[i]): the input is the object image,
      the target its same-class partner, the label the object's class.
    """

    images: Tensor
    labels: Tensor
    image_shape: tuple[int, ...] | None = None  # (channels, height, width) of one image; None: not images (codes)
    corruption: Corruption | None = None
    fixed_inputs: Tensor | None = None
    objects: Tensor | None = None
    partners: Tensor | None = None

    def __len__(self) -> int:
        return len(self.objects) if self.objects is not None else len(self.images)

    def to(self, device: torch.device) -> SplitData:
        """The same split with every tensor on `device` (one copy; batches are then gathered there)."""
        moved = {
            name: getattr(self, name).to(device) if getattr(self, name) is not None else None
            for name in ("images", "labels", "fixed_inputs", "objects", "partners")
        }
        return replace(self, **moved)

    def image_index(self, index: Tensor) -> Tensor:
        """Indices into `images` of the given items (of each pair's object in pairs mode)."""
        return self.objects[index] if self.objects is not None else index

    @property
    def item_labels(self) -> Tensor:
        """The label of every item (of every pair's object in pairs mode)."""
        return self.labels[self.objects] if self.objects is not None else self.labels

    def batch(self, index: Tensor, generator: torch.Generator | None = None) -> Batch:
        return self.batches([index], [generator])[0]

    def batches(self, indices: list[Tensor], generators: list[torch.Generator | None]) -> list[Batch]:
        """An `(input, target, label)` batch for each index tensor, its noise drawn from its generator; one gather
        per tensor for all of them (a group of the speed path), each batch a view of it."""
        sizes = [len(index) for index in indices]
        index = torch.cat(indices)
        items = self.image_index(index)
        clean = self.images[items].split(sizes)
        target = self.images[self.partners[index]].split(sizes) if self.partners is not None else clean
        labels = self.labels[items].split(sizes)
        if self.fixed_inputs is not None:
            inputs = self.fixed_inputs[items].split(sizes)
        elif self.corruption is not None:
            inputs = tuple(self._corrupt(part, generator) for part, generator in zip(clean, generators, strict=True))
        else:
            inputs = clean  # the same view objects as the targets: an autoencoder's input is its target
        return list(zip(inputs, target, labels, strict=True))

    def _corrupt(self, part: Tensor, generator: torch.Generator | None) -> Tensor:
        """`part` (rows of images) corrupted, shaped as the corruption needs it and given back as it came."""
        if self.image_shape is None and not self.corruption.any_values:
            raise ValueError("a corruption needs images: give the split its image_shape (channels, height, width).")
        shape = part.shape if self.image_shape is None else (-1, *self.image_shape)
        return self.corruption(part.reshape(shape), generator).view_as(part)

    def corrupted_once(self, seed: int, chunk: int = 2000) -> Tensor:
        """Every image corrupted once, the noise drawn from `seed`: what evaluation splits keep as `fixed_inputs`,
        so that every run and epoch is scored on the same noise. In chunks, to bound peak memory."""
        generator = torch.Generator(device=self.images.device).manual_seed(seed)
        return torch.cat([self._corrupt(part, generator) for part in self.images.split(chunk)])

    @torch.no_grad()
    def means(self, seed: int = 0, chunk: int = 4096) -> tuple[Tensor, Tensor]:
        """The mean input and the mean target over the split's items, each shaped like one item.

        Models centre their inputs and start their output bias from these. Corrupted inputs are drawn
        once from `seed` (their own generator: the training noise streams are untouched).
        """
        generator = torch.Generator(device=self.images.device).manual_seed(seed)
        input_sum = target_sum = None
        for index in torch.arange(len(self), device=self.images.device).split(chunk):
            inputs, target, _ = self.batch(index, generator)
            input_sum = inputs.sum(0, dtype=torch.float64) + (0 if input_sum is None else input_sum)
            target_sum = target.sum(0, dtype=torch.float64) + (0 if target_sum is None else target_sum)
        return (input_sum / len(self)).float(), (target_sum / len(self)).float()


class EpochBatchSampler:
    """Index batches for one rank, reshuffled per epoch from (seed, epoch).

    Training (`shuffle=True`): every rank draws the same permutation, padded by wrapping
    around to a multiple of the world size (as `DistributedSampler` does, so that every
    rank runs the same number of steps), and takes every `world_size`-th item from its
    rank on. Evaluation (`shuffle=False`): contiguous shards in order, never padded, so no
    item is counted twice.
    """

    def __init__(
        self, size: int, batch_size: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        if size <= 0:
            raise ValueError(f"cannot batch an empty split (size={size}).")
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shard(self) -> Tensor:
        """The item indices this rank sees this epoch, in order."""
        if not self.shuffle:
            bounds = [self.size * r // self.world_size for r in range(self.world_size + 1)]
            return torch.arange(bounds[self.rank], bounds[self.rank + 1])
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        order = torch.randperm(self.size, generator=generator)
        padded = math.ceil(self.size / self.world_size) * self.world_size
        if padded > self.size:
            order = torch.cat([order, order[: padded - self.size]])
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[Tensor]:
        return iter(self.shard().split(self.batch_size))

    def __len__(self) -> int:
        if self.shuffle:
            items = math.ceil(self.size / self.world_size)
        else:
            items = self.size * (self.rank + 1) // self.world_size - self.size * self.rank // self.world_size
        return math.ceil(items / self.batch_size)


class InMemoryLoader:
    """An iterable of `(input, target, label)` batches over a `SplitData`.

    With `group > 1` it yields lists of up to `group` consecutive batches instead; the speed
    path (`lightning_ae.strategies.GroupedSteps`) sets it for the training loader.
    """

    def __init__(self, split: SplitData, sampler: EpochBatchSampler, group: int = 1) -> None:
        self.split = split
        self.sampler = sampler  # the name Lightning looks for when it calls set_epoch
        self.batch_sampler = None  # Lightning inspects it; batching is the sampler's job here
        self.group = group
        self._yielded = 0  # items (batches or groups) handed out in the current pass
        self._resume: dict[str, int] | None = None

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.group)

    # Lightning's loops call these when they save and load a checkpoint. The loader has no
    # length-unknown prefetching (it has __len__), so `yielded` is exactly what the steps consumed.
    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "yielded": self._yielded, **self._shape()}

    def _shape(self) -> dict[str, int]:
        """What a resumed pass must share with the checkpoint's for "skip the first `yielded`" to mean the same
        batches: the number of items, the batch size, the batches per step."""
        return {"items": self.sampler.size, "batch_size": self.sampler.batch_size, "group": self.group}

    def load_state_dict(self, state: dict[str, int]) -> None:
        ours = self._shape()
        differ = {key: (state[key], value) for key, value in ours.items() if key in state and state[key] != value}
        if differ:
            what = "; ".join(f"{key} {then} in the checkpoint, {now} now" for key, (then, now) in differ.items())
            raise ValueError(
                f"resuming with other training data than the checkpoint's ({what}): resume with the same data "
                "settings (dataset, val_size, train_subset, batch_size) and trainer.strategy, or start a new run."
            )
        self._resume = dict(state)

    def _skip(self) -> int:
        """Items to skip in this pass: those consumed before the checkpoint, when it is of this epoch."""
        resume, self._resume = self._resume, None
        if resume is None or resume.get("epoch") != self.sampler.epoch:
            return 0
        return int(resume.get("yielded", 0))

    def _noise(self, batch_number: int) -> torch.Generator | None:
        if self.split.corruption is None or self.split.fixed_inputs is not None:
            return None
        # Fresh noise for every batch, reproducible per (seed, epoch, rank, batch): a resumed pass redraws it.
        sampler = self.sampler
        generator = torch.Generator(device=self.split.images.device)  # noise drawn where the images are
        return generator.manual_seed(derive_seed(sampler.seed, sampler.epoch, sampler.rank, 1, batch_number))

    def __iter__(self) -> Iterator[Batch]:
        # A generator: the body runs at the first next(), after Lightning's set_epoch and load_state_dict.
        skip = self._skip()
        self._yielded = skip
        indices = list(self.sampler)
        for start in range(skip * self.group, len(indices), self.group):
            self._yielded += 1
            if self.group == 1:
                yield self.split.batch(indices[start], self._noise(start))
                continue
            numbers = range(start, min(start + self.group, len(indices)))
            yield self.split.batches([indices[n] for n in numbers], [self._noise(n) for n in numbers])
