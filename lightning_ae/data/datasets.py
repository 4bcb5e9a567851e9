"""The datasets lightning-ae knows, where their files are looked for, and loading them verified.

Each dataset is a `DatasetSpec`: four IDX files with pinned SHA-256 sums (like the
`resources` of torchvision's `datasets/mnist.py`, but over the decompressed bytes).
Adding a dataset of the same format is adding one spec to `DATASETS`; its image shape
(`DatasetSpec.image_shape`, from its IDX files' shape) is the one every other part reads.

Where files are looked for, first match wins (a folder matches when it, or its
sub-folder named after the dataset, holds all four files, raw or `.gz`):
1. the `data_dir` the caller names;
2. the environment variable `LIGHTNING_AE_DATA_DIR`;
3. the data bundled with lightning-ae: `lightning_ae/_data` inside an installed wheel,
   or `data/` of the source checkout (found from this file, not from the current
   directory);
4. the spec's system folders (Debian's `dataset-fashion-mnist` for Fashion-MNIST);
5. torchvision's download into the cache folder, for specs that allow it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lightning_ae.data.idx import DataFileError, IdxFile, default_cache_dir, load_verified

log = logging.getLogger(__name__)

# The MNIST format's image (channels, height, width): the one place the package writes it. The specs below
# build their IDX files' shapes from it, and the models' default `input_shape` is MNIST's spec's (models may
# import this module and nothing else from the data: tests/test_layout.py).
MNIST_SHAPE: tuple[int, int, int] = (1, 28, 28)

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset in the MNIST IDX format."""

    name: str
    title: str
    classes: tuple[str, ...]
    train_images: IdxFile
    train_labels: IdxFile
    test_images: IdxFile
    test_labels: IdxFile
    licence: str
    system_dirs: tuple[Path, ...] = ()
    torchvision_class: str | None = None  # name in torchvision.datasets that can download it

    @property
    def files(self) -> tuple[IdxFile, ...]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)

    @property
    def num_train(self) -> int:
        return self.train_labels.shape[0]

    @property
    def num_pixels(self) -> int:
        """Values in one image: the length of a flat input."""
        channels, height, width = self.image_shape
        return channels * height * width

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image: IDX images are one grey channel of the files' height x width."""
        return (1, *self.train_images.shape[1:])


def mnist_format(train_images: str, train_labels: str, test_images: str, test_labels: str) -> dict[str, IdxFile]:
    """The four files of the MNIST format (names and shapes: 60,000 + 10,000 images of MNIST's
    height x width), with the SHA-256 sums of one dataset (over the decompressed bytes).

    A new dataset in this format is one spec: `DatasetSpec(name=..., title=..., classes=...,
    **mnist_format(<the four sums>), licence=...)`, added to `DATASETS` (see the README's
    "extending" section)."""
    height_width = MNIST_SHAPE[1:]
    return {
        "train_images": IdxFile("train-images-idx3-ubyte", train_images, (60000, *height_width)),
        "train_labels": IdxFile("train-labels-idx1-ubyte", train_labels, (60000,)),
        "test_images": IdxFile("t10k-images-idx3-ubyte", test_images, (10000, *height_width)),
        "test_labels": IdxFile("t10k-labels-idx1-ubyte", test_labels, (10000,)),
    }


MNIST = DatasetSpec(
    name="mnist",
    title="MNIST",
    classes=tuple(str(digit) for digit in range(10)),
    **mnist_format(
        train_images="ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        train_labels="65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        test_images="0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        test_labels="ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
    licence="CC BY-SA 3.0 (Y. LeCun, C. Cortes, C. J. C. Burges)",
)

FASHION_MNIST = DatasetSpec(
    name="fashion_mnist",
    title="Fashion-MNIST",
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    **mnist_format(
        train_images="c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        train_labels="bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        test_images="5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        test_labels="0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
    licence="MIT (Zalando Research)",
    system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
    torchvision_class="FashionMNIST",
)

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (MNIST, FASHION_MNIST)}


def largest_image_side() -> int:
    """The longest image side, in pixels, over every known dataset: the bound for a size checked before
    the data is chosen (a corruption's block or stroke); the images themselves are checked when it meets them."""
    return max(max(spec.image_shape[1:]) for spec in DATASETS.values())


class DatasetNotFoundError(FileNotFoundError):
    """None of the places a dataset is looked for holds it."""


@dataclass
class RawDataset:
    """The official train and test splits as verified uint8 images and int64 labels."""

    spec: DatasetSpec
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: Path = field(default=Path())


def get_spec(name: str) -> DatasetSpec:
    """The spec registered under `name`; a ValueError lists the valid names otherwise."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"dataset={name!r} is not a known dataset; valid values: {sorted(DATASETS)}.") from None


def _bundled_roots() -> list[Path]:
    return [_PACKAGE_DIR / "_data", _PACKAGE_DIR.parent / "data"]


def _file_in(folder: Path, file: IdxFile) -> Path | None:
    for candidate in (folder / file.name, folder / f"{file.name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _complete_folder(root: Path, spec: DatasetSpec) -> Path | None:
    """`root` or `root/<name>` when it holds all four files."""
    for folder in (root, root / spec.name):
        if all(_file_in(folder, file) for file in spec.files):
            return folder
    return None


def check_named_folder(spec: DatasetSpec, setting: str, root: Path) -> None:
    """Raise DatasetNotFoundError unless `root` (or `root/<name>`) holds every file of `spec`."""
    if _complete_folder(root, spec):
        return
    if not root.is_dir():
        problem = "is not a folder" if root.exists() else "does not exist"
    else:
        folder = root / spec.name if (root / spec.name).is_dir() else root
        missing = [file.name for file in spec.files if not _file_in(folder, file)]
        held = "holds none" if len(missing) == len(spec.files) else f"lacks {len(missing)}"
        problem = f"{held} of the {spec.title} files ({', '.join(f'{name}[.gz]' for name in missing)} missing)"
    raise DatasetNotFoundError(
        f"{setting}: the folder {problem}. Put the four files there (or in its {spec.name}/), or leave the "
        "setting out to use the data lightning-ae finds itself (the bundled MNIST, system folders)."
    )


def candidate_roots(spec: DatasetSpec, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Every folder searched for `spec`, in order (download not included)."""
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir).expanduser())
    if env := os.environ.get("LIGHTNING_AE_DATA_DIR"):
        roots.append(Path(env).expanduser())
    roots += _bundled_roots()
    roots += list(spec.system_dirs)
    return roots


def _download_with_torchvision(spec: DatasetSpec, cache_dir: Path) -> Path:
    import torchvision.datasets

    root = cache_dir / "torchvision"
    dataset_cls = getattr(torchvision.datasets, spec.torchvision_class)
    dataset_cls(str(root), train=True, download=True)  # fetches all four files, checks their MD5
    return root / spec.torchvision_class / "raw"


def locate(
    spec: DatasetSpec,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    cache_dir: Path | None = None,
) -> Path:
    """The folder that holds all four files of `spec`; raises DatasetNotFoundError naming every way tried.

    A folder the user names (`data_dir`, or $LIGHTNING_AE_DATA_DIR) must hold the files: falling back
    to the bundled data would silently train on other data than the user asked for.
    """
    named = [(f"data_dir={str(data_dir)!r}", data_dir)] if data_dir is not None else []
    if env := os.environ.get("LIGHTNING_AE_DATA_DIR"):
        named.append((f"LIGHTNING_AE_DATA_DIR={env!r}", env))
    for setting, root in named:
        check_named_folder(spec, setting, Path(root).expanduser())
    roots = candidate_roots(spec, data_dir)
    for root in roots:
        if folder := _complete_folder(root, spec):
            return folder
    tried = [f"  - {root} (or {root / spec.name})" for root in roots]
    if download and spec.torchvision_class:
        try:
            folder = _download_with_torchvision(spec, cache_dir or default_cache_dir())
            if found := _complete_folder(folder, spec):
                return found
            tried.append(f"  - torchvision download: finished but {folder} lacks some files")
        except Exception as err:  # offline, proxy, server down: all end in the same advice
            tried.append(f"  - torchvision download: failed ({type(err).__name__}: {str(err).splitlines()[0]})")
    elif spec.torchvision_class:
        tried.append("  - torchvision download: not attempted (download disabled)")
    ways = [
        "name the folder that holds them (`data_dir: /path` in the config, `--data.data_dir /path`, "
        "or the environment variable LIGHTNING_AE_DATA_DIR)",
    ]
    if spec.system_dirs:
        ways.append(
            f"install Debian's package (`apt-get install dataset-{spec.name.replace('_', '-')}`), "
            f"which puts them in {spec.system_dirs[0]}"
        )
    if spec.torchvision_class:
        ways.append(
            f"run once with network access so that torchvision.datasets.{spec.torchvision_class} downloads them"
        )
    files = ", ".join(f"{file.name}[.gz]" for file in spec.files)
    raise DatasetNotFoundError(
        f"Cannot find the {spec.title} files ({files}). Looked in:\n"
        + "\n".join(tried)
        + "\nTo fix it, "
        + "; or ".join(ways)
        + "."
    )


def load_dataset(
    dataset: str | DatasetSpec = "mnist",
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    use_cache: bool = True,
) -> RawDataset:
    """Find, verify and load a dataset's official train and test splits."""
    spec = get_spec(dataset) if isinstance(dataset, str) else dataset
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = locate(spec, data_dir, download=download, cache_dir=cache)
    arrays = [load_verified(_file_in(folder, file), file, cache if use_cache else None) for file in spec.files]
    train_images, train_labels, test_images, test_labels = arrays
    for labels, split in ((train_labels, "train"), (test_labels, "test")):
        if labels.max() >= len(spec.classes):
            raise DataFileError(f"{folder}: {split} labels go up to {labels.max()}, expected < {len(spec.classes)}.")
    return RawDataset(
        spec=spec,
        train_images=train_images,
        train_labels=train_labels.astype(np.int64),
        test_images=test_images,
        test_labels=test_labels.astype(np.int64),
        source=folder,
    )
