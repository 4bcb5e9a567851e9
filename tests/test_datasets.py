"""Finding and loading the datasets: official MNIST statistics, locations, Fashion-MNIST."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import MNIST_DIR, OFFICIAL_TEST_COUNTS, OFFICIAL_TRAIN_COUNTS, REPO

from lightning_ae.data import datasets
from lightning_ae.data.datasets import FASHION_MNIST, MNIST, DatasetNotFoundError, load_dataset

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
def test_official_mnist_label_counts_and_pixels(mnist):
    assert np.bincount(mnist.train_labels).tolist() == OFFICIAL_TRAIN_COUNTS
    assert np.bincount(mnist.test_labels).tolist() == OFFICIAL_TEST_COUNTS
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.train_images.dtype == np.uint8
    assert mnist.test_images.shape == (10000, 28, 28)
    # Known statistics of MNIST: pixel mean 0.1307 and std 0.3081 on [0, 1] (train).
    pixels = mnist.train_images.astype(np.float64) / 255
    assert pixels.mean() == pytest.approx(0.1307, abs=1e-4)
    assert pixels.std() == pytest.approx(0.3081, abs=1e-4)


@pytest.mark.slow
def test_bundled_data_found_from_any_working_directory(tmp_path):
    code = "from lightning_ae.data import load_dataset; print(load_dataset('mnist').source)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()) == MNIST_DIR


def test_explicit_data_dir_and_environment_variable_take_precedence(tmp_path, monkeypatch):
    copy = tmp_path / "elsewhere"
    shutil.copytree(MNIST_DIR, copy)
    assert load_dataset("mnist", data_dir=copy).source == copy
    monkeypatch.setenv("LIGHTNING_AE_DATA_DIR", str(tmp_path))  # the parent: its mnist/ is not there
    shutil.copytree(MNIST_DIR, tmp_path / "mnist")
    assert load_dataset("mnist").source == tmp_path / "mnist"


def test_tampered_copy_named_by_the_user_is_rejected_not_skipped(tmp_path):
    copy = tmp_path / "mnist"
    shutil.copytree(MNIST_DIR, copy)
    target = copy / "train-labels-idx1-ubyte.gz"
    target.chmod(0o644)
    import gzip

    raw = bytearray(gzip.decompress(target.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10
    target.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(datasets.DataFileError, match=r"train-labels-idx1-ubyte.gz: SHA-256 .* expected 65a50cbb"):
        load_dataset("mnist", data_dir=copy, cache_dir=tmp_path / "cache")


def test_missing_dataset_error_names_the_three_ways(tmp_path, monkeypatch):
    spec = dataclasses.replace(FASHION_MNIST, system_dirs=(tmp_path / "no-debian-package",))

    def offline(spec, cache_dir):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: Name or service not known")

    monkeypatch.setattr(datasets, "_download_with_torchvision", offline)
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset(spec, cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert "--data.data_dir" in message and "LIGHTNING_AE_DATA_DIR" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "torchvision download: failed" in message and "Name or service not known" in message


def test_download_can_be_disabled(tmp_path, monkeypatch):
    spec = dataclasses.replace(FASHION_MNIST, system_dirs=())
    monkeypatch.setattr(datasets, "_download_with_torchvision", lambda *a: pytest.fail("downloaded"))
    with pytest.raises(DatasetNotFoundError, match="not attempted"):
        load_dataset(spec, download=False)


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda root: None, "does not exist"),
        (lambda root: root.write_text("x"), "is not a folder"),
        (lambda root: root.mkdir(), "holds none of the MNIST files"),
        (lambda root: (root / "mnist").mkdir(parents=True), "holds none of the MNIST files"),
        (
            lambda root: [root.mkdir(), shutil.copy(MNIST_DIR / "train-images-idx3-ubyte.gz", root)],
            "lacks 3 of the MNIST files (train-labels-idx1-ubyte[.gz], t10k-images",
        ),
    ],
    ids=["missing", "a-file", "empty", "empty-subfolder", "incomplete"],
)
@pytest.mark.parametrize("how", ["data_dir", "environment"])
def test_a_folder_the_user_names_must_hold_the_data_and_never_falls_back_to_the_bundled_copy(
    tmp_path, monkeypatch, make, said, how
):
    root = tmp_path / "named"
    make(root)
    if how == "environment":
        monkeypatch.setenv("LIGHTNING_AE_DATA_DIR", str(root))
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("mnist", data_dir=root if how == "data_dir" else None, cache_dir=tmp_path / "cache")
    setting = "data_dir=" if how == "data_dir" else "LIGHTNING_AE_DATA_DIR="
    assert str(err.value).startswith(f"{setting}{str(root)!r}: the folder {said}"), err.value


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match=r"dataset='cifar10' .* valid values: \['fashion_mnist', 'mnist'\]"):
        load_dataset("cifar10")


@pytest.mark.skipif(
    not DEBIAN_FASHION.is_dir(), reason=f"Debian's dataset-fashion-mnist is not installed ({DEBIAN_FASHION} absent)"
)
def test_fashion_mnist_from_debian_package():
    data = load_dataset("fashion_mnist", download=False)
    assert data.source == DEBIAN_FASHION
    assert np.bincount(data.train_labels).tolist() == [6000] * 10  # Fashion-MNIST is balanced
    assert np.bincount(data.test_labels).tolist() == [1000] * 10
    assert data.train_images.shape == (60000, 28, 28)
    assert data.spec.classes[9] == "Ankle boot"


@pytest.mark.slow
def test_installed_wheel_carries_the_data_and_finds_it_elsewhere(tmp_path):
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheel_dir), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheel_dir.glob("lightning_ae-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for file in MNIST.files:
        assert f"lightning_ae/_data/mnist/{file.name}.gz" in names
    zipfile.ZipFile(wheel).extractall(target)
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = (
        "import lightning_ae; from lightning_ae.data import load_dataset; "
        "print(lightning_ae.__file__); print(load_dataset().source)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    module_file, source = out.stdout.split()
    assert module_file.startswith(str(target))
    assert Path(source) == target / "lightning_ae" / "_data" / "mnist"
