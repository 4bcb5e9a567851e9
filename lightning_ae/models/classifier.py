"""The MLP classifier of homework 2.4: pixels-1000-1000-10, softmax output, categorical cross-entropy."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from lightning_ae.checks import check_dropout
from lightning_ae.data.datasets import MNIST
from lightning_ae.models.layers import Activation, check_code_dim
from lightning_ae.models.layers import activation as make_activation
from lightning_ae.models.trainable import (
    LRSchedulerCallable,
    OptimizerCallable,
    TrainableModule,
    adam_lr1e3,
    reduce_lr_on_plateau,
)

EVALUATED = ("val", "test")  # the stages whose accuracy is measured


class Classifier(TrainableModule):
    """input -> hidden_dims (with `activation`) -> num_classes, trained with softmax cross-entropy.

    The loss is `F.cross_entropy` on the logits: softmax plus categorical cross-entropy,
    the negative log-probability of the true class. (The homework's fine-tuning snippet
    compiles the softmax model with binary cross-entropy, which scores the 10 outputs as
    10 independent yes/no questions; with a softmax they are not independent, and Keras
    then also reports a per-output "binary accuracy" near 90% for a useless model.)

    `dropout` zeroes each hidden unit, and `input_dropout` each input pixel, with that probability in
    training (Srivastava et al., JMLR 2014): the regulariser that brings a net of this size from about
    1.6% to about 1.3% test error on MNIST. The defaults are the measured recipe (`configs/classifier.yaml`):
    dropout 0.5 and 0.2, Adam with learning rate 1e-3, the plateau schedule. The homework's network and
    optimizer are `lightning_ae.models.presets.HOMEWORK_CLASSIFIER`: with both dropouts at 0 the network
    has no dropout layers at all, so its checkpoints are those of the homework's network.

    `freeze_hidden=True` trains only the output layer on top of fixed hidden layers
    (homework 2.4b "before fine-tuning"). `load_hidden_layers` copies pre-trained
    encoder layers in.

    Logged: `train/loss`, `val/loss`, `val/acc`, `val/error`, and at test `test/acc`,
    `test/error`, `test/loss`.
    """

    def __init__(
        self,
        hidden_dims: list[int] | None = None,
        activation: Activation = "sigmoid",
        num_classes: int = 10,
        freeze_hidden: bool = False,
        dropout: float = 0.5,
        input_dropout: float = 0.2,
        optimizer: OptimizerCallable = adam_lr1e3,
        scheduler: LRSchedulerCallable | None = reduce_lr_on_plateau,
        input_shape: tuple[int, ...] = (MNIST.num_pixels,),
    ) -> None:
        super().__init__(optimizer, scheduler)
        hidden_dims = [1000, 1000] if hidden_dims is None else list(hidden_dims)
        for size in hidden_dims:
            check_code_dim(size, "hidden_dims")
        check_code_dim(num_classes, "num_classes")
        make_activation(activation, "activation")
        for name, value in (("dropout", dropout), ("input_dropout", input_dropout)):
            check_dropout(name, value)
        if freeze_hidden and not hidden_dims:
            raise ValueError("freeze_hidden=True needs at least one hidden layer; hidden_dims is empty.")
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.input_shape = tuple(input_shape)
        sizes = [math.prod(self.input_shape), *hidden_dims]
        layers: list[nn.Module] = [nn.Flatten()]
        if input_dropout:
            layers.append(nn.Dropout(input_dropout))
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(n_in, n_out), make_activation(activation, "activation")]
            if dropout:
                layers.append(nn.Dropout(dropout))
        self.hidden = nn.Sequential(*layers)
        self.output = nn.Linear(sizes[-1], num_classes)  # logits; softmax is inside the loss
        self.freeze_hidden = freeze_hidden
        self.hidden.requires_grad_(not freeze_hidden)
        # One accuracy per evaluated stage (a metric accumulates until its epoch ends); none in training, where
        # the loss is what is optimized and an accuracy would cost a sync per epoch for nothing.
        self.accuracy = nn.ModuleDict({stage: MulticlassAccuracy(num_classes, average="micro") for stage in EVALUATED})

    @property
    def hidden_linears(self) -> list[nn.Linear]:
        return [m for m in self.hidden if isinstance(m, nn.Linear)]

    def load_hidden_layers(self, layers: Sequence[nn.Linear]) -> None:
        """Copy the weights and biases of pre-trained encoder layers into the hidden layers, in order."""
        own = self.hidden_linears
        if len(layers) != len(own):
            raise ValueError(f"{len(layers)} pre-trained layers given for {len(own)} hidden layers.")
        with torch.no_grad():
            for number, (source, target) in enumerate(zip(layers, own, strict=True), start=1):
                if source.weight.shape != target.weight.shape:
                    raise ValueError(
                        f"pre-trained layer {number} has shape {tuple(source.weight.shape)}; hidden layer "
                        f"{number} needs {tuple(target.weight.shape)} (out, in)."
                    )
                target.weight.copy_(source.weight)
                target.bias.copy_(source.bias)

    @override
    def forward(self, x: Tensor) -> Tensor:
        """Logits, shape (N, num_classes)."""
        return self.output(self.hidden(x))

    def encode(self, x: Tensor) -> Tensor:
        """The last hidden layer: what the evaluation callbacks (kNN, t-SNE) look at."""
        return self.hidden(x)

    def shared_step(self, batch: tuple[Tensor, Tensor, Tensor], stage: str) -> Tensor:
        """The cross-entropy of a batch, logged as `<stage>/loss`, and for val and test the accuracy."""
        inputs, _, labels = batch
        logits = self(inputs)
        loss = F.cross_entropy(logits, labels)
        n, shown = len(inputs), stage == "train"
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=shown, batch_size=n, sync_dist=True)
        if stage in self.accuracy:
            accuracy = self.accuracy[stage]
            accuracy.update(logits.argmax(dim=1), labels)
            self.log(f"{stage}/acc", accuracy, on_epoch=True, prog_bar=stage == "val")
        return loss

    @override
    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        return self.shared_step(batch, "train")

    @override
    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        self.shared_step(batch, "val")

    @override
    def test_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        self.shared_step(batch, "test")

    @override
    def on_validation_epoch_end(self) -> None:
        self.log("val/error", 1.0 - self.accuracy["val"].compute())

    @override
    def on_test_epoch_end(self) -> None:
        self.log("test/error", 1.0 - self.accuracy["test"].compute())

    @override
    def predict_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        inputs, _, labels = batch
        logits = self(inputs)
        return {"probabilities": logits.softmax(dim=1), "prediction": logits.argmax(dim=1), "label": labels}
