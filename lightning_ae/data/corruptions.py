"""Corruptions for denoising autoencoders (homework 2.2).

Each corruption is a small callable class whose parameters are checked at
construction. It takes a batch of images shaped (N, C, H, W) with pixels in [0, 1]
and a `torch.Generator` (so that the caller decides whether noise is fresh or fixed)
and returns a new tensor of the same shape, still in [0, 1].

Adding a corruption: subclass `Corruption`, implement `__call__`, add it to
`CORRUPTIONS`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from lightning_ae.data.datasets import largest_image_side


def _check_range(owner: str, name: str, value: float, low: float, high: float, low_open: bool, valid: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{owner}: {name}={value!r} is not a number; valid: {valid}.")
    too_low = value <= low if low_open else value < low
    if too_low or value > high:
        raise ValueError(f"{owner}: {name}={value!r} is out of range; valid: {valid}.")
    return float(value)


def _check_int(owner: str, name: str, value: int, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{owner}: {name}={value!r} is not valid; valid: an integer in [{low}, {high}].")
    return value


class Corruption:
    """Base class: `corruption(images, generator) -> corrupted images`."""

    name: ClassVar[str] = ""
    # Acts on each value alone and keeps any range, so it also corrupts vectors that are not images
    # (the codes a stacked denoising autoencoder's higher layers learn from).
    any_values: ClassVar[bool] = False

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return dict(vars(self))

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.params().items())
        return f"{type(self).__name__}({args})"


class Masking(Corruption):
    """The homework's masking noise: x~ = x * xi, xi_i ~ Bernoulli(p) independent.

    `p` is the probability that a pixel is KEPT. The homework's sample code uses
    `noise_level=0.1` as this p, so it keeps only 10% of the pixels.
    """

    name = "masking"
    any_values = True

    def __init__(self, p: float = 0.5) -> None:
        self.p = _check_range(
            "masking", "p", p, 0.0, 1.0, low_open=True, valid="0 < p <= 1, the probability that a pixel is kept"
        )

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        keep = torch.rand(images.shape, generator=generator, device=images.device) < self.p
        return images * keep


class Gaussian(Corruption):
    """Additive Gaussian noise of standard deviation `sigma`, clipped back to [0, 1]."""

    name = "gaussian"

    def __init__(self, sigma: float = 0.3) -> None:
        self.sigma = _check_range("gaussian", "sigma", sigma, 0.0, math.inf, low_open=False, valid="sigma >= 0")

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
        return (images + self.sigma * noise).clamp_(0.0, 1.0)


class SaltAndPepper(Corruption):
    """Each pixel, with probability `q`, is set to 0 or 1 (equally likely); so a fraction q on average."""

    name = "salt_and_pepper"

    def __init__(self, q: float = 0.2) -> None:
        self.q = _check_range("salt_and_pepper", "q", q, 0.0, 1.0, low_open=False, valid="0 <= q <= 1")

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        draw = torch.rand(images.shape, generator=generator, device=images.device)
        salt = torch.rand(images.shape, generator=generator, device=images.device) < 0.5
        hit = draw < self.q
        return torch.where(hit, salt.to(images.dtype), images)


class Block(Corruption):
    """A random `size` x `size` square of each image is occluded (set to 0)."""

    name = "block"

    def __init__(self, size: int = 10) -> None:
        # Bounded by the largest known image; `__call__` checks it against the images it meets.
        self.size = _check_int("block", "size", size, 1, largest_image_side())

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        n, _, height, width = images.shape
        if self.size > min(height, width):
            raise ValueError(f"block: size={self.size} does not fit images of {height}x{width}.")
        top = torch.randint(0, height - self.size + 1, (n, 1, 1), generator=generator, device=images.device)
        left = torch.randint(0, width - self.size + 1, (n, 1, 1), generator=generator, device=images.device)
        rows = torch.arange(height, device=images.device).view(1, height, 1)
        cols = torch.arange(width, device=images.device).view(1, 1, width)
        inside = (rows >= top) & (rows < top + self.size) & (cols >= left) & (cols < left + self.size)
        return images.masked_fill(inside.unsqueeze(1), 0.0)


class Strokes(Corruption):
    """`count` random straight strokes of ink, `width` pixels thick, drawn over each image.

    Where masking, salt-and-pepper and blocks remove or flip pixels, strokes ADD
    plausible pen marks: a stroke across a 1 can make it look like a 7 or a 4, so the
    network must use the shape of the whole digit to know which ink to drop.
    """

    name = "strokes"

    def __init__(self, count: int = 2, width: float = 2.0, min_length: float = 8.0) -> None:
        self.count = _check_int("strokes", "count", count, 1, 20)
        side = largest_image_side()  # no stroke is wider or must be longer than the largest known image
        self.width = _check_range("strokes", "width", width, 0.0, side, low_open=True, valid=f"0 < width <= {side}")
        self.min_length = _check_range(
            "strokes", "min_length", min_length, 0.0, side, low_open=False, valid=f"0 <= min_length <= {side}"
        )

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        n, _, height, width = images.shape
        device = images.device
        size = torch.tensor([width - 1.0, height - 1.0], device=device)
        start = torch.rand((n, self.count, 2), generator=generator, device=device) * size
        angle = torch.rand((n, self.count), generator=generator, device=device) * (2 * math.pi)
        length = self.min_length + torch.rand((n, self.count), generator=generator, device=device) * (
            max(height, width) - self.min_length
        )
        end = start + length.unsqueeze(-1) * torch.stack((angle.cos(), angle.sin()), dim=-1)
        # Distance of every pixel centre to every segment: (N, count, H, W).
        ys, xs = torch.meshgrid(
            torch.arange(height, device=device, dtype=torch.float32),
            torch.arange(width, device=device, dtype=torch.float32),
            indexing="ij",
        )
        pixels = torch.stack((xs, ys), dim=-1).view(1, 1, height, width, 2)
        a = start.view(n, self.count, 1, 1, 2)
        ab = (end - start).view(n, self.count, 1, 1, 2)
        t = (((pixels - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-6)).clamp(0.0, 1.0)
        distance = (pixels - (a + t.unsqueeze(-1) * ab)).norm(dim=-1)
        ink = (distance <= self.width / 2).any(dim=1, keepdim=True)
        return torch.where(ink, torch.ones((), dtype=images.dtype, device=device), images)


CORRUPTIONS: dict[str, type[Corruption]] = {cls.name: cls for cls in (Masking, Gaussian, SaltAndPepper, Block, Strokes)}


def build_corruption(name: str, params: dict[str, Any] | None = None) -> Corruption:
    """The corruption registered as `name`, built with `params` (checked by its constructor)."""
    if name not in CORRUPTIONS:
        raise ValueError(f"corruption={name!r} is not a known corruption; valid values: {sorted(CORRUPTIONS)}.")
    cls = CORRUPTIONS[name]
    try:
        return cls(**(params or {}))
    except TypeError as err:
        import inspect

        valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise ValueError(
            f"corruption_args={params!r} do not fit corruption {name!r} ({err}); its parameters are {valid}."
        ) from None
