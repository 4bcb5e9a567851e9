"""The trivial predictor a run must beat, for any model and data: the mean training target (image) of an
autoencoder, the class prior of a classifier. `ResultsJSON` stores its test figures beside the model's;
`DivergenceGuard` stops a run whose loss ends far above it."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from lightning_ae.data.loader import SplitData
from lightning_ae.evaluation.verdicts import (
    class_mean_predictor_metrics,
    class_prior,
    class_prior_metrics,
    mean_predictor_metrics,
    mean_target,
)
from lightning_ae.models import AutoencoderBase


def finite_number(value: Any) -> float | None:
    value = float(value.item() if isinstance(value, torch.Tensor) else value)
    return value if math.isfinite(value) else None  # JSON has no NaN; a null is unmistakable


def _targets(split: SplitData, batch_size: int) -> Iterator[Tensor]:
    """The split's own batch targets, in chunks (the clean image, or the pair's partner in pairs mode).

    Corruption only changes the inputs, so it is switched off here: no noise is drawn for nothing.
    """
    clean = replace(split, corruption=None, fixed_inputs=None)
    for index in torch.arange(len(split)).split(batch_size):
        yield clean.batch(index)[1]


def _labels(split: SplitData, batch_size: int) -> Iterator[Tensor]:
    """The split's item labels in the chunks of `_targets` (the object's class in pairs mode)."""
    labels = split.item_labels
    for index in torch.arange(len(split)).split(batch_size):
        yield labels[index.to(labels.device)]


def trivial_predictor(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any] | None:
    """The test figures of the trivial predictor for this model and data, or None when they cannot be had.

    An autoencoder's: the mean training target (image) for every test item, BCE and MSE per pixel and per
    image; a classifier's: the class prior of the training labels, its cross-entropy and majority-class error.
    """
    data = trainer.datamodule
    if data is None or not callable(getattr(data, "split", None)):
        return None
    batch_size = int(getattr(data, "eval_batch_size", 1000) or 1000)
    train, test = data.split("train"), data.split("test")
    if isinstance(pl_module, AutoencoderBase):
        mean = mean_target(_targets(train, batch_size))
        figures = mean_predictor_metrics(mean, _targets(test, batch_size))
        trivial = {"predictor": "mean training image", **{f"test/{k}": v for k, v in figures.items()}}
        if train.partners is not None:  # similarity pairs: the class's mean image is the best any model can do
            labelled = zip(_targets(train, batch_size), _labels(train, batch_size), strict=True)
            tested = zip(_targets(test, batch_size), _labels(test, batch_size), strict=True)
            floor = class_mean_predictor_metrics(labelled, tested, int(train.labels.max().item()) + 1)
            trivial["class_mean"] = {f"test/{k}": v for k, v in floor.items()}
        return trivial
    if hasattr(pl_module, "hparams") and "num_classes" in pl_module.hparams:
        prior = class_prior(train.item_labels, int(pl_module.hparams["num_classes"]))
        figures = class_prior_metrics(prior, test.item_labels)
        return {
            "predictor": "class prior",
            "test/loss": finite_number(figures["loss"]),
            "test/error": figures["error"],
            "majority_class": figures["majority_class"],
            "prior": [round(p, 6) for p in prior.tolist()],
        }
    return None


def learned_metric(pl_module: pl.LightningModule) -> str:
    """The test metric set against the trivial predictor's: what the model is trained to lower."""
    if isinstance(pl_module, AutoencoderBase):
        return "test/mse_per_pixel" if getattr(pl_module, "loss_name", "bce") == "mse" else "test/bce_per_pixel"
    return "test/loss"
