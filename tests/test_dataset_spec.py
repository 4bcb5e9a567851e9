"""Shapes come from the dataset spec: a new IDX dataset is one spec entry, and nothing assumes MNIST's shape."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_ae.callbacks import EmbeddingProjector, PCABaseline, ReconstructionGrid, TSNEPlot
from lightning_ae.data import DATASETS, DatasetSpec, ImageDataModule, MNISTDataModule
from lightning_ae.data.datasets import MNIST, MNIST_SHAPE, mnist_format
from lightning_ae.data.idx import IdxFile
from lightning_ae.models import Autoencoder, ConvAutoencoder

pytestmark = pytest.mark.slow  # trains, spawns processes or runs studies: `make test`, not `make test-fast`

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "lightning_ae"
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def sha256_of(path: Path) -> str:
    """The sum a spec pins: over the decompressed bytes."""
    return hashlib.sha256(gzip.open(path).read()).hexdigest()


def fit_and_test(model: pl.LightningModule, datamodule: ImageDataModule, root: Path, callbacks: list) -> Path:
    trainer = pl.Trainer(
        max_epochs=1,
        logger=TensorBoardLogger(root, name="run"),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(model, datamodule=datamodule)
    trainer.test(model, datamodule=datamodule, verbose=False)
    return Path(trainer.log_dir)


def test_the_old_name_is_an_alias():
    assert MNISTDataModule is ImageDataModule


def test_a_28x28_idx_dataset_is_one_spec_entry(tmp_path, monkeypatch):
    """A dataset in MNIST's format (here a copy of the bundled files, renamed) needs its spec and nothing else."""
    folder = tmp_path / "digits_copy"
    folder.mkdir()
    for name in FILES:
        shutil.copy(REPO / "data" / "mnist" / f"{name}.gz", folder / f"{name}.gz")
    sums = [sha256_of(folder / f"{name}.gz") for name in FILES]
    # The one entry: what README's "extending" section shows.
    spec = DatasetSpec(
        name="digits_copy",
        title="Digits (a copy of MNIST)",
        classes=tuple(str(digit) for digit in range(10)),
        **mnist_format(*sums),
        licence="CC BY-SA 3.0",
    )
    monkeypatch.setitem(DATASETS, spec.name, spec)

    datamodule = ImageDataModule(dataset="digits_copy", data_dir=str(tmp_path), train_subset=500, batch_size=50)
    assert datamodule.image_shape == MNIST_SHAPE == spec.image_shape
    model = Autoencoder(code_dim=8, input_shape=datamodule.input_shape)
    run = fit_and_test(model, datamodule, tmp_path, [ReconstructionGrid(per_class=1)])
    assert datamodule.split("train").images.shape == (500, *datamodule.input_shape)
    assert (run / "reconstructions.png").is_file()


def write_idx(path: Path, array: np.ndarray) -> str:
    """An IDX file of uint8 `array` (gzipped), and its SHA-256 over the raw bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw))
    return hashlib.sha256(raw).hexdigest()


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> tuple[DatasetSpec, Path]:
    """A 16x20 dataset in the IDX format (MNIST crops, 600 + 200 images): a shape no code may assume."""
    from lightning_ae.data import load_dataset

    mnist = load_dataset("mnist")
    folder = tmp_path_factory.mktemp("crops") / "crops"
    folder.mkdir()
    arrays = {
        "train_images": mnist.train_images[:600, 6:22, 4:24],
        "train_labels": mnist.train_labels[:600].astype(np.uint8),
        "test_images": mnist.test_images[:200, 6:22, 4:24],
        "test_labels": mnist.test_labels[:200].astype(np.uint8),
    }
    files = {
        key: IdxFile(name, write_idx(folder / f"{name}.gz", arrays[key]), arrays[key].shape)
        for key, name in zip(arrays, FILES, strict=True)
    }
    spec = DatasetSpec(name="crops", title="MNIST crops", classes=MNIST.classes, licence=MNIST.licence, **files)
    return spec, folder.parent


@pytest.fixture
def crops(small_dataset, monkeypatch) -> tuple[DatasetSpec, Path]:
    spec, root = small_dataset
    monkeypatch.setitem(DATASETS, spec.name, spec)
    return spec, root


def evaluation_callbacks(root: Path) -> list:
    return [
        PCABaseline(cache_dir=str(root / "pca")),
        ReconstructionGrid(per_class=1),
        TSNEPlot(max_points=100, perplexity=10),
        EmbeddingProjector(max_items=100),
    ]


def grid_size(rows: int, columns: int, height: int, width: int, padding: int = 2) -> tuple[int, int]:
    """(width, height) in pixels of torchvision's make_grid of rows x columns images."""
    return columns * (width + padding) + padding, rows * (height + padding) + padding


def test_an_mlp_and_every_picture_take_their_shape_from_the_spec(crops, tmp_path):
    spec, root = crops
    assert spec.image_shape == (1, 16, 20)
    datamodule = ImageDataModule(dataset="crops", data_dir=str(root), val_size=100, batch_size=50)
    assert datamodule.input_shape == (320,) and datamodule.image_shape == (1, 16, 20)
    model = Autoencoder(code_dim=8, input_shape=datamodule.input_shape)
    run = fit_and_test(model, datamodule, tmp_path, evaluation_callbacks(tmp_path))
    with Image.open(run / "reconstructions.png") as png:  # originals over reconstructions, one per class
        assert png.size == grid_size(2, len(spec.classes), 16, 20)
    assert (run / "tsne.png").is_file() and (run / "pca_tsne.png").is_file()
    with Image.open(next(run.rglob("sprite.png"))) as sprite:  # 10 x 10 thumbnails, squared from their width
        assert sprite.size == (10 * 20, 10 * 20)
    projector = (run / "projector_config.pbtxt").read_text()
    assert "single_image_dim: 16" in projector and "single_image_dim: 20" in projector
    layers = json.loads((run / "layers.json").read_text())["layers"]
    assert layers[0]["shape"] == [320] and layers[-1]["shape"] == [320]


def test_a_conv_ae_and_a_corruption_take_their_shape_from_the_spec(crops, tmp_path):
    spec, root = crops
    datamodule = ImageDataModule(
        dataset="crops",
        data_dir=str(root),
        val_size=100,
        batch_size=50,
        layout="image",
        corruption="block",
        corruption_args={"size": 6},
    )
    model = ConvAutoencoder(input_shape=datamodule.input_shape, code_dim=8)
    run = fit_and_test(model, datamodule, tmp_path, evaluation_callbacks(tmp_path))
    with Image.open(run / "reconstructions.png") as png:  # originals, corrupted inputs, reconstructions
        assert png.size == grid_size(3, len(spec.classes), 16, 20)
    layers = {row["layer"]: row["shape"] for row in json.loads((run / "layers.json").read_text())["layers"]}
    assert layers["input"] == [1, 16, 20] and layers["code"] == [8]
    assert [16, 4, 5] in layers.values()  # the feature map after two 2x2 poolings


def test_a_conv_ae_names_the_shapes_it_cannot_take():
    with pytest.raises(ValueError, match=r"input_shape=\(1, 18, 20\) is not valid for ConvAutoencoder"):
        ConvAutoencoder(input_shape=(1, 18, 20))
    with pytest.raises(ValueError, match=r"input_shape=\(320,\) is not valid"):
        ConvAutoencoder(input_shape=(320,))  # flat, and not a square image
    flat_square = ConvAutoencoder(input_shape=(16 * 16,))  # a flat square one-channel image is unflattened
    assert flat_square(torch.rand(2, 256)).shape == (2, 256)


SHAPE_LITERAL = re.compile(r"(?<!\d)28\b|784")  # the issue's `grep -rn "28\b\|784" lightning_ae`, not 128
# Where MNIST's shape may be written: the dataset specs alone.
ALLOWED = {"data/datasets.py": None}


def test_no_shape_literal_outside_the_dataset_spec():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not SHAPE_LITERAL.search(line) or relative == "data/datasets.py":
                continue
            if relative in ALLOWED and ALLOWED[relative] and line.startswith(ALLOWED[relative]):
                continue
            found.append(f"lightning_ae/{relative}:{number}: {line.strip()}")
    assert not found, "shape literals outside the dataset spec:\n" + "\n".join(found)


def test_mnist_shape_is_written_once_and_the_specs_agree():
    from lightning_ae.data.datasets import FASHION_MNIST

    assert MNIST.image_shape == FASHION_MNIST.image_shape == MNIST_SHAPE
    assert torch.Size(Autoencoder().input_shape).numel() == torch.Size(MNIST_SHAPE).numel()
