"""TensorBoard lines up: one step unit on scalars and images, no hp_metric placeholder, and the HParams tab
lists a run's settings with its test metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO, tensorboard_hparams
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_ae.callbacks.hparams import flat_hparams
from lightning_ae.cli import main

GROUPED = '{"class_path": "lightning_ae.strategies.GroupedSteps", "init_args": {"batches_per_step": 3}}'


@pytest.fixture(scope="module")
def events(tmp_path_factory) -> EventAccumulator:
    folder = tmp_path_factory.mktemp("tb")
    callbacks = '[{"class_path": "lightning_ae.callbacks.ReconstructionGrid", "init_args": {"every_n_epochs": 1}}]'
    argv = ["fit", "--config", str(REPO / "configs" / "basic_ae.yaml"), "--data.train_subset", "640"]
    argv += ["--trainer.max_epochs", "2", "--trainer.callbacks", callbacks, "--trainer.strategy", GROUPED]
    argv += ["--trainer.logger.init_args.save_dir", str(folder), "--trainer.enable_progress_bar", "false"]
    assert main(argv) == 0
    [run] = Path(folder).glob("*/version_0")  # its event files: the fit's and the test's
    accumulator = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    accumulator.Reload()
    accumulator.logdir = folder  # TensorBoard's log root, for the HParams tab
    return accumulator


def test_scalars_and_images_count_the_same_steps(events):
    # 640 images at batch 128: 5 batches, in groups of 3: 2 Lightning steps per epoch, 4 in the 2 epochs.
    scalar_steps = {event.step for tag in events.Tags()["scalars"] for event in events.Scalars(tag)}
    training_images = [event.step for event in events.Images("reconstructions")]
    [test_image] = [event.step for event in events.Images("test/reconstructions")]
    val_steps = [event.step for event in events.Scalars("val/loss")]
    test_steps = [event.step for event in events.Scalars("test/bce_per_pixel")]
    assert len(val_steps) == 2 and val_steps == training_images  # each epoch's images sit on its val/loss point
    assert val_steps[1] - val_steps[0] == 2  # in Lightning steps (2 groups per epoch), not epochs
    assert test_steps == [test_image]  # the test's metrics and pictures at one step, logged once
    assert max(scalar_steps) == test_image


def test_no_hp_metric_placeholder(events):
    assert "hp_metric" not in events.Tags()["scalars"]


def test_the_hparams_tab_lists_the_settings_with_the_test_metrics(events):
    experiment, [group] = tensorboard_hparams(events.logdir)  # as TensorBoard's HParams plugin computes them
    columns = [info.name for info in experiment.hparam_infos]
    metrics = {info.name.tag for info in experiment.metric_infos}
    assert {"test/bce_per_pixel", "test/mse_per_pixel"} <= metrics
    assert {"code_dim", "optimizer.name", "data.train_subset"} <= set(columns)
    assert group.hparams["code_dim"].number_value == 32
    assert group.hparams["optimizer.name"].string_value == "Adam"
    assert group.hparams["data.train_subset"].number_value == 640
    assert not [name for name in columns if name.rsplit(".", 1)[-1].startswith("_")]  # no _class_path, _instantiator
    # An unset setting has no value, not the text 'none' (which would turn its column into text).
    assert not [key for key, value in group.hparams.items() if value.string_value == "none"]


def test_hparams_are_flattened_to_what_tensorboard_accepts():
    flat = flat_hparams({"a": {"b": 1, "c": [2, 3], "_x": 4}, "d": None, "e": True, "f": 0.5, "_class_path": "M"})
    assert flat == {"a.b": 1, "a.c": "[2, 3]", "e": True, "f": 0.5}  # no internal keys, nothing for unset ones
