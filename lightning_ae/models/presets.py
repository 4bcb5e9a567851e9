"""The homework's training protocols, one name away in Python as in YAML.

The constructors' defaults (`Autoencoder()`, `Classifier()`, `ImageDataModule()`) are the measured
recipe. A preset holds what the homework's protocol changes, for the model, the data and the trainer;
each equals a config fragment (a test holds the two together):

    model = Autoencoder(code_dim=32, **HOMEWORK_SGD.model)
    data = ImageDataModule(**HOMEWORK_SGD.data)
    trainer = pl.Trainer(**HOMEWORK_SGD.trainer)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import nn


def sgd_lr1(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The homework's optimizer for the MLP autoencoders: plain SGD with learning rate 1.0."""
    return torch.optim.SGD(params, lr=1.0)


def sgd_momentum(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The homework's optimizer for the classifier: SGD, learning rate 0.01, momentum 0.9."""
    return torch.optim.SGD(params, lr=0.01, momentum=0.9)


@dataclass(frozen=True)
class Preset:
    """Keyword arguments for the model, the data module and `pl.Trainer`; `config` is the same as a fragment."""

    model: Mapping[str, Any]
    data: Mapping[str, Any]
    trainer: Mapping[str, Any]
    config: str

    def __post_init__(self) -> None:
        for name in ("model", "data", "trainer"):  # read-only: a preset is shared by every caller
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))


HOMEWORK_SGD = Preset(
    model={"optimizer": sgd_lr1, "scheduler": None},
    data={"batch_size": 32},
    trainer={"max_epochs": 50},
    config="configs/fragments/homework_sgd.yaml",
)
"""The MLP autoencoders' protocol (2.1a, 2.2b, 2.3b): SGD lr 1.0, batch 32, no schedule, 50 epochs."""

HOMEWORK_CLASSIFIER = Preset(
    model={"optimizer": sgd_momentum, "scheduler": None, "dropout": 0.0, "input_dropout": 0.0},
    data={"batch_size": 25},
    trainer={"max_epochs": 50},
    config="configs/fragments/homework_classifier.yaml",
)
"""The classifier's protocol (2.4a): SGD lr 0.01 with momentum 0.9, no dropout, batch 25, 50 epochs."""
