"""Argument checks, and MNIST's image shape, shared by every part of the package (it imports nothing from it)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

# MNIST's image shape (channels, height, width): the one place the package writes it. It lives here
# because this is the one module that both the data and the models may import (tests/test_layout.py):
# the dataset specs (`lightning_ae.data.datasets`) build the MNIST-format IDX files from it, and the
# models default their `input_shape` to it. Every other shape comes from a dataset spec: the data
# module's `image_shape`/`input_shape`, which the CLI links into the model, and the callbacks read.
MNIST_SHAPE: tuple[int, int, int] = (1, 28, 28)
MNIST_PIXELS: int = math.prod(MNIST_SHAPE)  # an MNIST image as one flat vector


def check_positive_int(name: str, value: Any, allow_none: bool = False, meaning: str = "") -> Any:
    """`value` when it is a positive integer (or None, if allowed); a ValueError naming `name` otherwise."""
    if value is None and allow_none:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        valid = "a positive integer" + (" or null" if allow_none else "") + (f" ({meaning})" if meaning else "")
        raise ValueError(f"{name}={value!r} is not valid; valid: {valid}.")
    return value


def check_non_negative(name: str, value: Any) -> float:
    """`value` when it is a finite number >= 0; a ValueError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}={value!r} is not valid; valid: a finite number >= 0.")
    return float(value)


def non_finite_values(config: Any, where: str = "") -> list[str]:
    """`key=value` for every NaN or infinite float in a nested config (mappings, namespaces, lists)."""
    if isinstance(config, float):
        return [] if math.isfinite(config) else [f"{where}={config}"]
    items: Iterable[tuple[Any, Any]] = ()
    if hasattr(config, "items") and callable(config.items):
        items = config.items()
    elif hasattr(config, "__dict__") and type(config).__name__ == "Namespace":
        items = vars(config).items()
    elif isinstance(config, list | tuple):
        items = enumerate(config)
    found = []
    for key, value in items:
        found += non_finite_values(value, f"{where}.{key}" if where else str(key))
    return found
