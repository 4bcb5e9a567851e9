"""ImageDataModule: splits, layouts, batches, noise, pairs, sharding and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import OFFICIAL_TRAIN_COUNTS

from lightning_ae.data import ImageDataModule
from lightning_ae.data.corruptions import Block, Masking
from lightning_ae.data.loader import EpochBatchSampler
from lightning_ae.data.tensors import TensorDataModule


def make(**kwargs) -> ImageDataModule:
    dm = ImageDataModule(**kwargs)
    dm.setup()
    return dm


def test_split_sizes_and_disjointness(datamodule):
    idx = datamodule.split_indices
    assert [len(datamodule.split(s)) for s in ("train", "val", "test")] == [55000, 5000, 10000]
    train, val = set(idx["train"].tolist()), set(idx["val"].tolist())
    assert not train & val and len(train | val) == 60000  # val comes out of the official train set
    # The test split is the official test set, untouched.
    assert torch.equal(idx["test"], torch.arange(10000))


def test_split_contents_are_the_official_arrays(datamodule, mnist):
    for stage, source in (("train", mnist.train_images), ("val", mnist.train_images)):
        index = datamodule.split_indices[stage].numpy()
        expected = torch.from_numpy(source[index].reshape(len(index), -1).astype(np.float32) / 255)
        assert torch.equal(datamodule.split(stage).images, expected)
        assert torch.equal(datamodule.split(stage).labels, torch.from_numpy(mnist.train_labels[index]))
    assert torch.equal(datamodule.split("test").labels, torch.from_numpy(mnist.test_labels))


def test_validation_is_stratified_within_one_of_each_class_share(datamodule):
    counts = torch.bincount(datamodule.split("val").labels, minlength=10).tolist()
    for count, total in zip(counts, OFFICIAL_TRAIN_COUNTS, strict=True):
        assert abs(count - 5000 * total / 60000) <= 1


def test_pixels_are_float32_in_unit_interval_and_layouts_agree(datamodule):
    flat = datamodule.split("train").images
    assert flat.dtype == torch.float32 and flat.shape == (55000, 784)
    assert flat.min() == 0 and flat.max() == 1
    image = make(layout="image", train_subset=100).split("train").images
    assert image.shape == (100, 1, 28, 28)
    assert torch.equal(image.reshape(100, -1), flat[:100])
    inputs, target, labels = next(iter(make(layout="image", train_subset=100).test_dataloader()))
    assert inputs.shape == (1000, 1, 28, 28) and labels.dtype == torch.int64


def test_same_seed_same_splits_and_batches_other_seed_differs(datamodule):
    again = make()
    assert torch.equal(again.split_indices["val"], datamodule.split_indices["val"])
    first, second = next(iter(datamodule.train_dataloader())), next(iter(again.train_dataloader()))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    other = make(seed=1, train_subset=10)
    assert not torch.equal(other.split_indices["val"], datamodule.split_indices["val"])


def test_plain_batches_have_input_is_target_and_cover_the_epoch(datamodule):
    loader = datamodule.train_dataloader()
    seen = []
    for inputs, target, labels in loader:
        assert inputs is target
        seen.append(labels)
    assert len(loader) == -(-55000 // datamodule.batch_size) and sum(map(len, seen)) == 55000  # the last one short
    assert torch.bincount(torch.cat(seen)).tolist() == torch.bincount(datamodule.split("train").labels).tolist()


def test_shuffle_changes_with_the_epoch_and_is_reproducible(datamodule):
    loader = datamodule.train_dataloader()
    loader.sampler.set_epoch(0)
    epoch0 = loader.sampler.shard()
    loader.sampler.set_epoch(1)
    epoch1 = loader.sampler.shard()
    assert not torch.equal(epoch0, epoch1) and torch.equal(epoch0.sort().values, epoch1.sort().values)
    loader.sampler.set_epoch(0)
    assert torch.equal(loader.sampler.shard(), epoch0)


def test_training_noise_is_fresh_per_batch_and_epoch_but_evaluation_noise_is_fixed():
    dm = make(corruption="masking", corruption_args={"p": 0.5}, train_subset=64, batch_size=32)
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(0)
    batches0 = list(loader)
    assert torch.equal(batches0[0][0], list(loader)[0][0])  # the same epoch again: the same noise
    loader.sampler.set_epoch(1)
    batches1 = list(loader)
    # Masks differ between the two batches of an epoch and for the same image across epochs.
    assert not torch.equal(batches0[0][0] > 0, batches0[1][0] > 0)
    order0, order1 = (torch.cat([b[2] for b in bs]) for bs in (batches0, batches1))
    assert order0.shape == order1.shape
    image_id = dm.split("train").images[0]
    per_epoch = []
    for batches in (batches0, batches1):
        for inputs, target, _ in batches:
            row = (target == image_id).all(dim=1).nonzero()
            if len(row):
                per_epoch.append(inputs[row[0, 0]])
    assert len(per_epoch) == 2 and not torch.equal(per_epoch[0], per_epoch[1])
    # Validation: fixed, equal across iterations and across DataModules with the same seed.
    val_a = next(iter(dm.val_dataloader()))[0]
    assert torch.equal(val_a, next(iter(dm.val_dataloader()))[0])
    twin = make(corruption="masking", corruption_args={"p": 0.5}, train_subset=64)
    assert torch.equal(val_a, next(iter(twin.val_dataloader()))[0])
    inputs, target, _ = next(iter(dm.val_dataloader()))
    assert not torch.equal(inputs, target) and torch.all(inputs <= target)


def test_pairs_mode_targets_are_same_class_partners_within_the_split():
    dm = make(pairs=True, sim=10, pair_objects=2000, layout="image", batch_size=32)
    for stage in ("train", "val", "test"):
        split = dm.split(stage)
        assert len(split) == 20000 and len(split.images) == {"train": 55000, "val": 5000, "test": 10000}[stage]
        assert torch.equal(split.labels[split.objects], split.labels[split.partners])
        assert torch.equal(split.objects, torch.arange(2000).repeat_interleave(10))
        assert split.partners.max() < 2000  # partners come from the same split's objects
    inputs, target, labels = next(iter(dm.train_dataloader()))
    assert inputs.shape == target.shape == (32, 1, 28, 28)
    # Every target is an image of the label's class: find it among the split's images.
    split = dm.split("train")
    flat = split.images[:2000].view(2000, -1)
    for t, label in zip(target.view(32, -1), labels, strict=True):
        matches = (flat == t).all(dim=1).nonzero().flatten()
        assert (split.labels[matches] == label).any()


def test_pairs_are_built_inside_each_split_never_across():
    dm = make(pairs=True, pair_objects=500)
    train_ids = set(dm.split_indices["train"][:500].tolist())
    val_ids = set(dm.split_indices["val"][:500].tolist())
    assert not train_ids & val_ids
    # The val objects are the first 500 images of the val split itself; every image stays for evaluation.
    assert torch.equal(dm.split("val").images, make(train_subset=1).split("val").images)
    assert dm.split("val").objects.max() < 500 and dm.split("val").partners.max() < 500


@pytest.mark.parametrize("world_size", [2, 3])
def test_training_shards_partition_the_epoch_and_evaluation_shards_never_pad(world_size):
    size = 1001
    train = [EpochBatchSampler(size, 32, True, seed=0, rank=r, world_size=world_size) for r in range(world_size)]
    shards = [s.shard() for s in train]
    assert len({len(s) for s in shards}) == 1 and len({len(s) for s in train}) == 1  # same steps on every rank
    union = torch.cat(shards)
    assert set(union.tolist()) == set(range(size))
    assert len(union) - size == (-size) % world_size  # only the wrap-around padding repeats
    evaluation = [EpochBatchSampler(size, 100, False, seed=0, rank=r, world_size=world_size) for r in range(world_size)]
    items = torch.cat([s.shard() for s in evaluation])
    assert torch.equal(items, torch.arange(size))  # every item exactly once
    assert sum(len(list(iter(s))) for s in evaluation) == sum(len(s) for s in evaluation)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"dataset": "emnist"}, r"dataset='emnist' is not a known dataset; valid values: \['fashion_mnist', 'mnist'\]"),
        ({"corruption": "blur"}, r"corruption='blur' is not a known corruption; valid values"),
        ({"val_size": 0}, r"val_size=0 is not valid; valid: an integer from 10 to 59990"),
        ({"val_size": 9}, r"val_size=9 is not valid; valid: an integer from 10 to 59990 \(the split is stratified"),
        ({"val_size": 59991}, r"val_size=59991 is not valid"),
        ({"val_size": -5}, r"val_size=-5"),
        ({"val_size": 60000}, r"val_size=60000 is not valid"),
        ({"val_size": 1.5}, r"val_size=1.5"),
        ({"corruption": "masking", "corruption_args": {"p": 0}}, r"masking: p=0 is out of range; valid: 0 < p <= 1"),
        ({"corruption": "masking", "corruption_args": {"p": 1.01}}, r"p=1.01"),
        ({"corruption": "gaussian", "corruption_args": {"sigma": -1}}, r"gaussian: sigma=-1 is out of range"),
        ({"layout": "nchw"}, r"layout='nchw' is not a known layout; valid values: \['flat', 'image'\]"),
        ({"batch_size": 0}, r"batch_size=0 is not valid; valid: a positive integer"),
        ({"pairs": True, "sim": 0}, r"sim=0 is not valid; valid: a positive integer"),
        ({"train_subset": 56000}, r"train_subset=56000 is larger than the training split \(55000 images"),
        ({"corruption_args": {"p": 0.5}}, r"corruption_args=\{'p': 0.5\} given without a corruption"),
    ],
)
def test_bad_configuration_is_a_value_error_naming_parameter_value_and_valid_range(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        ImageDataModule(**kwargs)


def test_using_a_split_before_setup_says_what_to_do():
    with pytest.raises(RuntimeError, match=r"setup\(\) has not run"):
        ImageDataModule().split("train")


def test_on_an_accelerator_the_splits_move_to_it_once_and_batches_are_gathered_there():
    """No GPU here: the 'meta' device stands in for one (tensors with shapes and no storage)."""
    from types import SimpleNamespace

    dm = ImageDataModule(train_subset=256, corruption="masking", corruption_args={"p": 0.5}, batch_size=32)
    dm.trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device("meta")), global_rank=0, world_size=1
    )
    dm.setup()
    for stage in ("train", "val", "test"):
        split = dm.split(stage)
        assert split.images.device.type == split.labels.device.type == "meta", stage
    assert dm.split("val").fixed_inputs.device.type == "meta"  # drawn on the CPU (same noise), then moved
    inputs, target, labels = next(iter(dm.val_dataloader()))
    assert inputs.device.type == target.device.type == labels.device.type == "meta"
    assert inputs.shape == (1000, 784)

    on_cpu = ImageDataModule(train_subset=256)
    on_cpu.trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device("cpu")), global_rank=0, world_size=1
    )
    on_cpu.setup()
    assert on_cpu.split("train").images.device.type == "cpu"


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"corruption": "masking", "corruption_args": {"p": 0.5}}, {"pairs": True, "sim": 3}],
    ids=["plain", "masking", "pairs"],
)
def test_a_group_is_gathered_at_once_into_the_same_batches_as_one_by_one(kwargs):
    """The speed path's loader gathers a group of mini-batches in one index per tensor (then splits it into
    views): the same inputs, targets, labels and noise as gathering each mini-batch alone."""
    dm = make(train_subset=200, batch_size=32, **kwargs)
    one_by_one = list(dm.train_dataloader())
    grouped_loader = dm.train_dataloader()
    grouped_loader.group = 3
    groups = list(grouped_loader)
    assert {len(g) for g in groups[:-1]} == {3} and 1 <= len(groups[-1]) <= 3
    grouped = [batch for group in groups for batch in group]
    assert len(grouped) == len(one_by_one) >= 7
    for ours, theirs in zip(grouped, one_by_one, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            assert torch.equal(a, b)
        assert (ours[0] is ours[1]) == (theirs[0] is theirs[1])  # a plain AE's input is its target object
    if not kwargs:
        assert grouped[0][0] is grouped[0][1]


def test_tensor_splits_take_masking_and_refuse_corruptions_of_images():
    sizes = {"train": 64, "val": 32, "test": 32}
    splits = {stage: (torch.rand(n, 40) * 4 - 2, torch.arange(n) % 10) for stage, n in sizes.items()}
    dm = TensorDataModule(splits, tuple(str(c) for c in range(10)), batch_size=16, corruption=Masking(0.5))
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(0)
    epoch0 = list(loader)
    for inputs, target, _ in epoch0:  # values of any range kept or zeroed, the target clean
        kept = inputs != 0
        assert torch.equal(inputs[kept], target[kept]) and 0.3 < kept.float().mean() < 0.7
    loader.sampler.set_epoch(1)
    assert not torch.equal(epoch0[0][0] != 0, next(iter(loader))[0] != 0)  # fresh noise per epoch
    val = next(iter(dm.val_dataloader()))[0]
    assert torch.equal(val, next(iter(dm.val_dataloader()))[0])  # evaluation noise fixed
    with pytest.raises(ValueError, match=r"corrupts images .* use masking"):
        TensorDataModule(splits, ("a",), corruption=Block())
