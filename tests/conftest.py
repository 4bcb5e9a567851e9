"""Shared fixtures. Tests run on the real bundled MNIST; the verified-array cache lives in a
fresh temporary folder per test session, so every run exercises the first-load check too."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = REPO / "data" / "mnist"

# Set before any test imports lightning_ae so every code path sees the session cache.
_SESSION_CACHE = tempfile.mkdtemp(prefix="lightning-ae-test-cache-")
os.environ["LIGHTNING_AE_CACHE_DIR"] = _SESSION_CACHE
os.environ.pop("LIGHTNING_AE_DATA_DIR", None)

OFFICIAL_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
OFFICIAL_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="session")
def mnist():
    from lightning_ae.data import load_dataset

    return load_dataset("mnist")


@pytest.fixture(scope="session")
def datamodule():
    """The default DataModule (flat, seed 0), set up once for read-only tests."""
    from lightning_ae.data import ImageDataModule

    dm = ImageDataModule()
    dm.setup()
    return dm
