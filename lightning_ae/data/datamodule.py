"""`ImageDataModule` (alias `MNISTDataModule`): the official splits plus a stratified validation split, in memory.

A batch is `(input, target, label)`: for a plain autoencoder the input is the target;
with a corruption the input is corrupted and the target clean; in pairs mode the target
is a random image of the same class (homework 2.3).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal, get_args

import pytorch_lightning as pl
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor
from typing_extensions import override

from lightning_ae.checks import check_positive_int
from lightning_ae.data.corruptions import Corruption, build_corruption
from lightning_ae.data.datasets import RawDataset, get_spec, load_dataset
from lightning_ae.data.loader import EpochBatchSampler, InMemoryLoader, SplitData, derive_seed
from lightning_ae.data.pairs import similarity_pairs

log = logging.getLogger(__name__)

Layout = Literal["flat", "image"]  # a type: the CLI lists the choices and refuses others
LAYOUTS: tuple[str, ...] = get_args(Layout)
STAGES = ("train", "val", "test")
# Seed "purposes", so that the split, the pairs and the fixed noise draw independent streams.
_SPLIT, _PAIRS, _FIXED_NOISE, _MEANS = 11, 12, 13, 14


MAX_PAIRS = 10_000_000  # similarity pairs per split: 160 MB of indices, 500 times the homework's 20,000


class ImageDataModule(pl.LightningDataModule):
    """MNIST (or Fashion-MNIST) for autoencoders, held in memory.

    Args:
        dataset: "mnist" (bundled) or "fashion_mnist".
        data_dir: folder holding the IDX files; default: bundled data, see `lightning_ae.data.datasets`.
        val_size: validation images taken out of the 60,000 training images, stratified by class.
        layout: "flat" for vectors of all the pixels, "image" for (channels, height, width) tensors
            (the dataset spec's `image_shape`).
        batch_size: training batch size.
        eval_batch_size: batch size for validation, test and predict (does not change any metric).
        corruption: name of a corruption in `lightning_ae.data.corruptions.CORRUPTIONS`, or null.
        corruption_args: its parameters, e.g. `{p: 0.5}` for masking.
        pairs: similarity-pairs mode (homework 2.3).
        sim: partners per object in pairs mode.
        pair_objects: objects per split in pairs mode: the first N items of each split
            (null: all). Partners are drawn among these objects, inside their own split.
        train_subset: use only the first N images of the training split (quick runs).
        seed: seeds the validation split, the shuffling, the pairs and the noise.
        cache_dir: where verified arrays are cached (default: $LIGHTNING_AE_CACHE_DIR or ~/.cache/lightning_ae).
        download: allow torchvision to download a dataset that is not found locally.
        data_on_device: when the trainer runs on an accelerator (a GPU), move the splits there once in
            `setup`, so batches are gathered on the device instead of copied to it every step
            (MNIST as float32 is about 220 MB).
    """

    def __init__(
        self,
        dataset: str = "mnist",
        data_dir: str | None = None,
        val_size: int = 5000,
        layout: Layout = "flat",
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        corruption: str | None = None,
        corruption_args: dict[str, Any] | None = None,
        pairs: bool = False,
        sim: int = 10,
        pair_objects: int | None = 2000,
        train_subset: int | None = None,
        seed: int = 0,
        cache_dir: str | None = None,
        download: bool = True,
        data_on_device: bool = True,
    ) -> None:
        super().__init__()
        self.spec = get_spec(dataset)
        if layout not in LAYOUTS:
            raise ValueError(f"layout={layout!r} is not a known layout; valid values: {list(LAYOUTS)}.")
        # The split is stratified by class: each side needs at least one image of every class.
        classes, num_train = len(self.spec.classes), self.spec.num_train
        if (
            isinstance(val_size, bool)
            or not isinstance(val_size, int)
            or not classes <= val_size <= num_train - classes
        ):
            raise ValueError(
                f"val_size={val_size!r} is not valid; valid: an integer from {classes} to {num_train - classes} "
                f"(the split is stratified: the validation and the training side each need one image of each of "
                f"the {classes} classes)."
            )
        for name, value, allow_none in (
            ("batch_size", batch_size, False),
            ("eval_batch_size", eval_batch_size, False),
            ("pair_objects", pair_objects, True),
            ("train_subset", train_subset, True),
        ):
            check_positive_int(name, value, allow_none)
        if train_subset is not None and train_subset > self.spec.num_train - val_size:
            raise ValueError(
                f"train_subset={train_subset} is larger than the training split "
                f"({self.spec.num_train - val_size} images after val_size={val_size})."
            )
        if corruption is None and corruption_args:
            raise ValueError(f"corruption_args={corruption_args!r} given without a corruption; set corruption too.")
        self.corruption: Corruption | None = (
            build_corruption(corruption, corruption_args) if corruption is not None else None
        )
        if pairs:
            check_positive_int("sim", sim)
            objects = pair_objects if pair_objects is not None else self.spec.num_train
            if sim * objects > MAX_PAIRS:
                raise ValueError(
                    f"sim={sim} partners for each of up to {objects} objects is {sim * objects:,} pairs per split, "
                    f"more than {MAX_PAIRS:,} (16 bytes of indices each, and an epoch that long); lower sim or "
                    "pair_objects (the homework: sim 10, pair_objects 2000)."
                )
        self.save_hyperparameters()
        self.dataset, self.data_dir, self.val_size, self.layout = dataset, data_dir, val_size, layout
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.pairs, self.sim, self.pair_objects, self.train_subset = pairs, sim, pair_objects, train_subset
        self.seed, self.cache_dir, self.download = seed, cache_dir, download
        self.data_on_device = data_on_device
        self.splits: dict[str, SplitData] = {}
        self.split_indices: dict[str, Tensor] = {}  # indices into the official train/test arrays

    # Shapes known before any data is loaded, for models whose size follows from the data.
    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image, from the dataset spec."""
        return self.spec.image_shape

    @property
    def input_shape(self) -> tuple[int, ...]:
        """What a batch's input holds per item: the image shape, or its pixels as one vector ("flat")."""
        return (self.input_dim,) if self.layout == "flat" else self.image_shape

    @property
    def input_dim(self) -> int:
        return math.prod(self.image_shape)

    @property
    def num_classes(self) -> int:
        return len(self.spec.classes)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.classes

    def _load(self) -> RawDataset:
        return load_dataset(self.spec, self.data_dir, self.cache_dir, download=self.download)

    @override
    def prepare_data(self) -> None:
        # Verifies the files and fills the cache once, on one process per node.
        self._load()

    @override
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        raw = self._load()
        log.info("Loaded %s from %s", self.spec.title, raw.source)
        train_idx, val_idx = train_test_split(
            torch.arange(self.spec.num_train).numpy(),
            test_size=self.val_size,
            stratify=raw.train_labels,
            random_state=derive_seed(self.seed, _SPLIT) % 2**32,
        )
        train_idx, val_idx = torch.from_numpy(train_idx).sort().values, torch.from_numpy(val_idx).sort().values
        if self.train_subset is not None:
            train_idx = train_idx[: self.train_subset]
        self.split_indices = {"train": train_idx, "val": val_idx, "test": torch.arange(len(raw.test_labels))}
        train_images, train_labels = torch.from_numpy(raw.train_images), torch.from_numpy(raw.train_labels)
        sources = {
            "train": (train_images, train_labels, train_idx),
            "val": (train_images, train_labels, val_idx),
            "test": (torch.from_numpy(raw.test_images), torch.from_numpy(raw.test_labels), None),
        }
        for number, (name, (images, labels, index)) in enumerate(sources.items()):
            if index is not None:
                images, labels = images[index], labels[index]
            self.splits[name] = self._build_split(name, number, images, labels)
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if self.data_on_device and device.type != "cpu":
            self.splits = {name: split.to(device) for name, split in self.splits.items()}
            log.info("Moved the %s splits to %s once; batches are gathered there.", self.spec.title, device)

    def _build_split(self, name: str, number: int, images_u8: Tensor, labels: Tensor) -> SplitData:
        # One float32 copy per split, in the layout asked for (the image layout is a view of it).
        images = (images_u8.reshape(len(images_u8), -1).float() / 255.0).view(-1, *self.input_shape)
        split = SplitData(images=images, labels=labels.long(), image_shape=self.image_shape, corruption=self.corruption)
        if self.pairs:
            count = len(images) if self.pair_objects is None else min(self.pair_objects, len(images))
            # Pairs are drawn among the first `count` images; all images stay, for evaluation (kNN, PCA).
            generator = torch.Generator().manual_seed(derive_seed(self.seed, _PAIRS, number))
            split.objects, split.partners = similarity_pairs(split.labels[:count], self.sim, generator)
        if self.corruption is not None and name != "train":
            split.fixed_inputs = split.corrupted_once(derive_seed(self.seed, _FIXED_NOISE, number))
        return split

    def split(self, stage: str) -> SplitData:
        """The in-memory data of a split ("train", "val" or "test"), after `setup()`."""
        if stage not in STAGES:
            raise ValueError(f"stage={stage!r} is not a split; valid values: {list(STAGES)}.")
        if not self.splits:
            raise RuntimeError("ImageDataModule.setup() has not run yet; call it (the Trainer does) first.")
        return self.splits[stage]

    # What a checkpoint's training must have been made of for a resume to continue it: Lightning saves this
    # in every checkpoint and hands it back on resume, where another value would silently mean other data.
    RESUME_KEYS = (
        "dataset",
        "val_size",
        "train_subset",
        "seed",
        "batch_size",
        "corruption",
        "corruption_args",
        "pairs",
    )

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"data": {key: self.hparams.get(key) for key in self.RESUME_KEYS}}

    def resume_differences(self, state_dict: dict[str, Any]) -> list[str]:
        """The settings in which a checkpoint's saved state (`state_dict()`) differs from this DataModule's."""
        saved, ours = state_dict.get("data") or {}, self.state_dict()["data"]
        return [
            f"{key} {saved[key]!r} in the checkpoint, {ours[key]!r} now" for key in saved if saved[key] != ours.get(key)
        ]

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.trainer is not None and self.trainer.state.fn != "fit":
            return  # test, validate, predict: a checkpoint may be evaluated on any data
        if differ := self.resume_differences(state_dict):
            raise ValueError(
                f"resuming with other training data than the checkpoint's ({'; '.join(differ)}): resume with the "
                "same data settings, or start a new run (without --ckpt_path)."
            )

    def training_means(self) -> tuple[Tensor, Tensor]:
        """(mean input, mean target) of the training split: what models centre on and start their output from."""
        return self.split("train").means(seed=derive_seed(self.seed, _MEANS))

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, stage: str, batch_size: int, shuffle: bool) -> InMemoryLoader:
        split = self.split(stage)
        rank, world_size = self._rank()
        sampler = EpochBatchSampler(len(split), batch_size, shuffle, self.seed, rank, world_size)
        return InMemoryLoader(split, sampler)

    @override
    def train_dataloader(self) -> InMemoryLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    @override
    def val_dataloader(self) -> InMemoryLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    @override
    def test_dataloader(self) -> InMemoryLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    @override
    def predict_dataloader(self) -> InMemoryLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def describe(self) -> str:
        """One line per split: sizes and what a batch holds."""
        lines = [f"{self.spec.title} ({self.spec.licence}), layout={self.layout}, seed={self.seed}"]
        for stage in STAGES:
            split = self.split(stage)
            counts = torch.bincount(split.item_labels, minlength=self.num_classes).tolist()
            lines.append(f"  {stage:5s}: {len(split):6d} items, images {tuple(split.images.shape)}, per class {counts}")
        if self.corruption is not None:
            lines.append(f"  corruption: {self.corruption!r}")
        if self.pairs:
            lines.append(f"  pairs: {self.sim} partners per object, objects per split <= {self.pair_objects}")
        return "\n".join(lines)


# The module's name before it served every dataset in `DATASETS`; old configs and checkpoints use it.
MNISTDataModule = ImageDataModule
