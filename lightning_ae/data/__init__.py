"""Data: bundled MNIST (and Fashion-MNIST) read from IDX files, verified, in memory."""

from lightning_ae.data.corruptions import (
    CORRUPTIONS,
    Block,
    Corruption,
    Gaussian,
    Masking,
    SaltAndPepper,
    Strokes,
    build_corruption,
)
from lightning_ae.data.datamodule import ImageDataModule, MNISTDataModule
from lightning_ae.data.datasets import DATASETS, DatasetNotFoundError, DatasetSpec, load_dataset
from lightning_ae.data.idx import DataFileError
from lightning_ae.data.pairs import similarity_pairs

__all__ = [
    "CORRUPTIONS",
    "DATASETS",
    "Block",
    "Corruption",
    "DataFileError",
    "DatasetNotFoundError",
    "DatasetSpec",
    "Gaussian",
    "ImageDataModule",
    "MNISTDataModule",
    "Masking",
    "SaltAndPepper",
    "Strokes",
    "build_corruption",
    "load_dataset",
    "similarity_pairs",
]
