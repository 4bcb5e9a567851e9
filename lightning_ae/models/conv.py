"""The convolutional autoencoder of homework 2.1f, with an optional linear bottleneck of size d'."""

from __future__ import annotations

import math

from torch import nn

from lightning_ae.data.datasets import MNIST
from lightning_ae.models.base import AutoencoderBase
from lightning_ae.models.layers import Loss, check_code_dim
from lightning_ae.models.trainable import LRSchedulerCallable, OptimizerCallable, adam_lr1e3, reduce_lr_on_plateau


def conv_image_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The (channels, height, width) the conv layers see: `input_shape` itself, or for a flat input the
    square one-channel image of its length; height and width must survive two 2x2 poolings exactly."""
    shape = tuple(input_shape)
    if len(shape) == 1 and isinstance(shape[0], int) and shape[0] > 0 and math.isqrt(shape[0]) ** 2 == shape[0]:
        shape = (1, math.isqrt(shape[0]), math.isqrt(shape[0]))
    if len(shape) != 3 or any(not isinstance(n, int) or n <= 0 for n in shape) or shape[1] % 4 or shape[2] % 4:
        raise ValueError(
            f"input_shape={tuple(input_shape)!r} is not valid for ConvAutoencoder; valid: (channels, height, width) "
            "with height and width multiples of 4, or a flat (n,) with n the pixels of a square one-channel image "
            "whose side is a multiple of 4 (use the data's `layout: image` for any other image)."
        )
    return shape


class ConvAutoencoder(AutoencoderBase):
    """Conv2d encoder, ConvTranspose2d decoder on (channels, height, width) images.

    Defaults follow the homework's network: Conv(8, 3x3) ReLU, MaxPool 2 -> Conv(16, 3x3)
    ReLU, MaxPool 2 gives a 16 x height/4 x width/4 feature map (on MNIST as many numbers as
    the image: no compression at all); the decoder mirrors it with ConvTranspose2d and 2x
    upsampling, then a ConvTranspose2d back to the image's channels, with a sigmoid.
    `input_shape` is the image's (channels, height, width), height and width multiples of 4
    (the two poolings), or a flat vector of a square one-channel image. With `code_dim` set,
    a linear bottleneck of size d' sits between the two, so that the conv AE compares with
    the MLPs at the same d'.
    `describe()` lists the shape after every layer.
    """

    def __init__(
        self,
        channels: list[int] | None = None,
        kernel_size: int = 3,
        code_dim: int | None = None,
        loss: Loss = "bce",
        optimizer: OptimizerCallable = adam_lr1e3,
        scheduler: LRSchedulerCallable | None = reduce_lr_on_plateau,
        input_shape: tuple[int, ...] = MNIST.image_shape,
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
        image_shape = conv_image_shape(input_shape)
        channels_in, height, width = image_shape
        feature_shape = (channels[1], height // 4, width // 4)  # after the two 2x2 poolings
        feature_dim = math.prod(feature_shape)
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
            nn.Unflatten(1, image_shape) if len(self.input_shape) == 1 else nn.Identity(),
            nn.Conv2d(channels_in, c1, kernel_size, padding=pad),
            nn.ReLU(),
            nn.MaxPool2d(2),  # c1 x height/2 x width/2
            nn.Conv2d(c1, c2, kernel_size, padding=pad),
            nn.ReLU(),
            nn.MaxPool2d(2),  # c2 x height/4 x width/4
            nn.Flatten(),
        ]
        decoder: list[nn.Module] = []
        if code_dim is not None:
            encoder.append(nn.Linear(feature_dim, code_dim))
            decoder += [nn.Linear(code_dim, feature_dim), nn.ReLU()]
        decoder += [
            nn.Unflatten(1, feature_shape),
            nn.ConvTranspose2d(c2, c2, kernel_size, padding=pad),
            nn.ReLU(),
            nn.Upsample(scale_factor=2),
            nn.ConvTranspose2d(c2, c1, kernel_size, padding=pad),
            nn.ReLU(),
            nn.Upsample(scale_factor=2),
            nn.ConvTranspose2d(c1, channels_in, kernel_size, padding=pad),  # logits; sigmoid in decode()
        ]
        self.encoder = nn.Sequential(*encoder)
        self.decoder = nn.Sequential(*decoder)
