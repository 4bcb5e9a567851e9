"""Argument checks shared by every part of the package (it imports nothing from it)."""

from __future__ import annotations

from typing import Any


def check_positive_int(name: str, value: Any, allow_none: bool = False, meaning: str = "") -> Any:
    """`value` when it is a positive integer (or None, if allowed); a ValueError naming `name` otherwise."""
    if value is None and allow_none:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        valid = "a positive integer" + (" or null" if allow_none else "") + (f" ({meaning})" if meaning else "")
        raise ValueError(f"{name}={value!r} is not valid; valid: {valid}.")
    return value
