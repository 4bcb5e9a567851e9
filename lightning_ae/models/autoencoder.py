"""The MLP autoencoder: the homework's basic AE (one hidden layer, the code) and its deep AE."""

from __future__ import annotations

import torch
from torch import nn

from lightning_ae.data.datasets import MNIST
from lightning_ae.models.base import AutoencoderBase
from lightning_ae.models.layers import Activation, Loss, OutputActivation, check_code_dim
from lightning_ae.models.layers import activation as make_activation
from lightning_ae.models.trainable import LRSchedulerCallable, OptimizerCallable, adam_lr3e3, reduce_lr_on_plateau


class Autoencoder(AutoencoderBase):
    """pixels -> hidden_dims -> code_dim -> reversed(hidden_dims) -> pixels, sigmoid output.

    `hidden_dims: []` is the homework's basic AE (the only hidden layer is the code);
    `hidden_dims: [1000, 500, 250]` its deep AE. The homework's deep-AE sample code feeds
    `decoded3` from `encoded3`, which skips the code layer; this builds the intended
    symmetric network, whose decoder starts from the code.

    Args:
        code_dim: d', the size of the code.
        hidden_dims: encoder layer sizes before the code (the decoder mirrors them).
        activation: of the encoder's hidden layers.
        code_activation: of the code layer.
        decoder_activation: of the decoder's hidden layers.
        loss: "bce" or "mse", against the target in [0, 1].
        input_shape: linked from the data by the CLI; flat or image inputs both work. Default: MNIST's
            pixels as one vector (`lightning_ae.data.datasets.MNIST.num_pixels`).
        output_activation: "sigmoid" for pixels in [0, 1] (the default); "tanh" or "linear"
            (with loss "mse") to reconstruct other ranges, e.g. the codes of a tanh or ReLU
            layer in layer-wise pre-training.
        center_inputs: subtract the mean training input before the encoder (set when a fit starts).
        init_output_bias: start the output bias at the mean training target (logit of it for a sigmoid).
    """

    def __init__(
        self,
        code_dim: int = 32,
        hidden_dims: list[int] | None = None,
        activation: Activation = "sigmoid",
        code_activation: Activation | None = None,
        decoder_activation: Activation | None = None,
        loss: Loss = "bce",
        optimizer: OptimizerCallable = adam_lr3e3,
        scheduler: LRSchedulerCallable | None = reduce_lr_on_plateau,
        input_shape: tuple[int, ...] = (MNIST.num_pixels,),
        output_activation: OutputActivation = "sigmoid",
        center_inputs: bool = True,
        init_output_bias: bool = True,
    ) -> None:
        super().__init__(
            input_shape,
            check_code_dim(code_dim),
            loss,
            optimizer,
            scheduler,
            output_activation,
            center_inputs=center_inputs,
            init_output_bias=init_output_bias,
        )
        hidden_dims = list(hidden_dims or [])
        for size in hidden_dims:
            check_code_dim(size, "hidden_dims")
        code_activation = code_activation or activation
        decoder_activation = decoder_activation or activation
        for parameter, name in (
            ("activation", activation),
            ("code_activation", code_activation),
            ("decoder_activation", decoder_activation),
        ):
            make_activation(name, parameter)  # fail on the parameter the user wrote, before building
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])

        sizes = [self.input_dim, *hidden_dims]
        encoder: list[nn.Module] = [nn.Flatten()]
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            encoder += [nn.Linear(n_in, n_out), make_activation(activation, "activation")]
        encoder += [nn.Linear(sizes[-1], code_dim), make_activation(code_activation, "code_activation")]
        self.encoder = nn.Sequential(*encoder)

        back = [code_dim, *reversed(hidden_dims)]
        decoder: list[nn.Module] = []
        for n_in, n_out in zip(back[:-1], back[1:], strict=True):
            decoder += [nn.Linear(n_in, n_out), make_activation(decoder_activation, "decoder_activation")]
        decoder.append(nn.Linear(back[-1], self.input_dim))  # pre-activation; the output activation is in decode()
        self.decoder = nn.Sequential(*decoder)

    def input_layer(self) -> nn.Linear:
        """The encoder's first layer as it acts on raw (uncentred) inputs: W (x - shift) + b = W x + (b - W shift).

        Layer-wise pre-training copies it into a classifier that sees the raw images.
        """
        first = next(m for m in self.encoder if isinstance(m, nn.Linear))
        layer = nn.Linear(first.in_features, first.out_features, device=first.weight.device)
        with torch.no_grad():
            layer.weight.copy_(first.weight)
            layer.bias.copy_(first.bias - first.weight @ self.input_shift.reshape(-1))
        return layer
