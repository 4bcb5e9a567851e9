"""The Python API: the constructors' defaults are the configs' recipe, the homework's protocol is one named preset
away (the same as its YAML fragment), and the README's "From Python" example learns.

Before, `Autoencoder()` trained with the homework's SGD lr 1.0 and `ImageDataModule()` with batches of 32: the
README-style nine lines ended at test BCE 0.266, worse than the mean image (0.2627).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import REPO

from lightning_ae.cli import lightning_cli
from lightning_ae.data import ImageDataModule
from lightning_ae.experiment import pipeline_parser
from lightning_ae.models import Autoencoder, Classifier, ConvAutoencoder
from lightning_ae.models.presets import HOMEWORK_CLASSIFIER, HOMEWORK_SGD, Preset
from lightning_ae.pretraining import LayerwisePretraining, Stage

SCHEDULER_SETTINGS = ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lrs", "eps")


def training_settings(optimizer_factory: Any, scheduler_factory: Any) -> tuple:
    """What an optimizer and a schedule do, comparable whether they came from YAML or from a Python default."""
    optimizer = optimizer_factory([torch.nn.Parameter(torch.zeros(2))])
    scheduler = None if scheduler_factory is None else scheduler_factory(optimizer)
    schedule = None if scheduler is None else (type(scheduler), {k: getattr(scheduler, k) for k in SCHEDULER_SETTINGS})
    return type(optimizer), optimizer.defaults, schedule


def model_settings(model: Any) -> tuple:
    """The network (its modules), its set options, and its training; the CLI's own keys (`_class_path`) and
    options left to derive from others (None: `code_activation` follows `activation`) are not settings."""
    hparams = {k: v for k, v in model.hparams.items() if not k.startswith("_") and v is not None}
    hparams = {k: v for k, v in hparams.items() if k not in ("hidden_dims", "input_shape", "code_activation")}
    hparams.pop("decoder_activation", None)
    return repr(model), hparams, training_settings(model.optimizer_factory, model.scheduler_factory)


def data_settings(data: ImageDataModule) -> dict[str, Any]:
    return {k: v for k, v in data.hparams.items() if not k.startswith("_")}


def composed(*configs: str) -> Any:
    return lightning_cli([a for c in configs for a in ("--config", str(REPO / c))], run=False)


@pytest.mark.parametrize(
    ("configs", "default_model"),
    [
        (["configs/basic_ae.yaml"], Autoencoder),
        (["configs/basic_ae.yaml", "configs/classifier.yaml"], Classifier),
        (["configs/conv_ae.yaml"], ConvAutoencoder),
    ],
    ids=["autoencoder", "classifier", "conv"],
)
def test_the_constructors_defaults_are_the_configs_recipe(configs, default_model):
    cli = composed(*configs)
    model = default_model(input_shape=cli.model.hparams.input_shape)
    if default_model is Autoencoder:  # the network the config names (the default d' is the config's 32)
        assert cli.model.hparams.code_dim == model.hparams.code_dim == 32
    assert model_settings(model) == model_settings(cli.model)
    default_data, data = ImageDataModule(layout=cli.datamodule.hparams.layout), cli.datamodule
    assert data_settings(default_data) == data_settings(data)  # batch 128, 5,000 validation images


def test_the_pretraining_defaults_are_its_configs_recipe():
    parser = pipeline_parser()
    parsed = parser.instantiate_classes(parser.parse_args(["--config", str(REPO / "configs" / "pretrain.yaml")]))
    default = LayerwisePretraining()
    for name in ("layers", "frozen", "finetune"):
        stage, configured = getattr(default, name), parsed[name]
        assert isinstance(configured, Stage)
        plain = {k: v for k, v in vars(stage).items() if k not in ("optimizer", "scheduler")}
        assert plain == {k: v for k, v in vars(configured).items() if k not in ("optimizer", "scheduler")}, name
        assert training_settings(stage.optimizer, stage.scheduler) == training_settings(
            configured.optimizer, configured.scheduler
        ), name


@pytest.mark.parametrize(
    ("configs", "preset", "model_class"),
    [
        (["configs/basic_ae.yaml"], HOMEWORK_SGD, Autoencoder),
        (["configs/basic_ae.yaml", "configs/classifier.yaml"], HOMEWORK_CLASSIFIER, Classifier),
    ],
    ids=["homework_sgd", "homework_classifier"],
)
def test_a_preset_is_its_yaml_fragment(configs, preset: Preset, model_class):
    recipe = composed(*configs)
    cli = composed(*configs, preset.config)
    model = model_class(**{**{k: v for k, v in recipe.model.hparams.items() if not k.startswith("_")}, **preset.model})
    assert model_settings(model) == model_settings(cli.model)
    assert model_settings(model) != model_settings(recipe.model)  # the preset changes something
    data = ImageDataModule(**{**data_settings(recipe.datamodule), **preset.data})
    assert data_settings(data) == data_settings(cli.datamodule)
    assert all(getattr(cli.trainer, key) == value for key, value in preset.trainer.items())
    with pytest.raises(TypeError):
        preset.model["optimizer"] = None  # shared by every caller: read-only


def from_python_example() -> str:
    """The first Python block of the README's "From Python" section."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## From Python", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)[:1]
    return code


@pytest.mark.slow
def test_the_readme_from_python_example_ends_below_pca(tmp_path: Path):
    """The example as a user pastes it (default constructors, the evaluation callbacks), on the full data."""
    code = from_python_example()
    assert len(code.strip().splitlines()) <= 14
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    (results_file,) = tmp_path.glob("lightning_logs/version_*/results.json")
    results = json.loads(results_file.read_text())
    assert results["status"] == "tested" and results["code_dim"] == 32
    bce, pca_bce = results["ae"]["test/bce_per_pixel"], results["pca"]["test/bce_per_pixel"]
    assert bce < pca_bce < results["trivial"]["test/bce_per_pixel"]
    assert f"{bce:.4f}" in done.stdout  # the example shows its result
