"""The convolutional autoencoder of homework 2.1f, with an optional linear bottleneck of size d'."""

from __future__ import annotations

import torch
from torch import nn

from lightning_ae.models.base import AutoencoderBase, OptimizerFactory, SchedulerFactory
from lightning_ae.models.layers import check_code_dim


def adam(params) -> torch.optim.Optimizer:
    """The homework's optimizer for the conv AE (Keras 'adam': lr 1e-3)."""
    return torch.optim.Adam(params, lr=1e-3)


class ConvAutoencoder(AutoencoderBase):
    """Conv2d encoder, ConvTranspose2d decoder on 1x28x28 images.

    Defaults follow the homework's network: Conv(8, 3x3) ReLU, MaxPool 2 -> Conv(16, 3x3)
    ReLU, MaxPool 2 gives a 16x7x7 feature map (784 numbers: no compression at all);
    the decoder mirrors it with ConvTranspose2d and 2x upsampling, then a 1-channel
    ConvTranspose2d with a sigmoid. With `code_dim` set, a linear bottleneck of size d'
    sits between the two, so that the conv AE compares with the MLPs at the same d'.
    `describe()` lists the shape after every layer.
    """

    def __init__(
        self,
        channels: list[int] | None = None,
        kernel_size: int = 3,
        code_dim: int | None = None,
        loss: str = "bce",
        optimizer: OptimizerFactory = adam,
        scheduler: SchedulerFactory | None = None,
        input_shape: tuple[int, ...] = (1, 28, 28),
        center_inputs: bool = True,
        init_output_bias: bool = True,
    ) -> None:
        channels = list(channels or [8, 16])
        if len(channels) != 2 or any(not isinstance(c, int) or c <= 0 for c in channels):
            raise ValueError(f"channels={channels!r} is not valid; valid: two positive integers, e.g. [8, 16].")
        if kernel_size not in (3, 5, 7):
            raise ValueError(
                f"kernel_size={kernel_size!r} is not valid; valid values: [3, 5, 7] (odd, 'same' padding)."
            )
        feature_dim = channels[1] * 7 * 7
        super().__init__(
            input_shape,
            feature_dim if code_dim is None else check_code_dim(code_dim),
            loss,
            optimizer,
            scheduler,
            center_inputs=center_inputs,
            init_output_bias=init_output_bias,
        )
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        c1, c2, pad = channels[0], channels[1], kernel_size // 2
        encoder: list[nn.Module] = [
            nn.Unflatten(1, (1, 28, 28)) if len(self.input_shape) == 1 else nn.Identity(),
            nn.Conv2d(1, c1, kernel_size, padding=pad),
            nn.ReLU(),
            nn.MaxPool2d(2),  # c1 x 14 x 14
            nn.Conv2d(c1, c2, kernel_size, padding=pad),
            nn.ReLU(),
            nn.MaxPool2d(2),  # c2 x 7 x 7
            nn.Flatten(),
        ]
        decoder: list[nn.Module] = []
        if code_dim is not None:
            encoder.append(nn.Linear(feature_dim, code_dim))
            decoder += [nn.Linear(code_dim, feature_dim), nn.ReLU()]
        decoder += [
            nn.Unflatten(1, (c2, 7, 7)),
            nn.ConvTranspose2d(c2, c2, kernel_size, padding=pad),
            nn.ReLU(),
            nn.Upsample(scale_factor=2),
            nn.ConvTranspose2d(c2, c1, kernel_size, padding=pad),
            nn.ReLU(),
            nn.Upsample(scale_factor=2),
            nn.ConvTranspose2d(c1, 1, kernel_size, padding=pad),  # logits; sigmoid in decode()
        ]
        self.encoder = nn.Sequential(*encoder)
        self.decoder = nn.Sequential(*decoder)
