"""Argument checks shared by every part of the package (it imports nothing from it)."""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Iterable
from typing import Any

# Most file systems take at most this many bytes in one name.
MAX_NAME_BYTES = 255


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


def check_dropout(name: str, value: Any) -> float:
    """`value` when it is a probability in [0, 1) (a dropout rate); a ValueError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(f"{name}={value!r} is not valid; valid: a probability in [0, 1) (0 turns dropout off).")
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


# More values than any lightning-ae config holds (the largest, a study, has a few thousand).
MAX_CONFIG_VALUES = 100_000


def check_expansion(document: Any, where: str, limit: int = MAX_CONFIG_VALUES) -> None:
    """Refuse a parsed YAML document that expands to more than `limit` values.

    YAML aliases nested in each other ("billion laughs") parse into a few shared lists, cheaply, but
    every later step (validation, error messages, OmegaConf) expands them: nine levels of nine are
    387 million values. The walk stops as soon as the limit is passed, so it costs at most `limit` steps.
    """
    count, stack = 0, [document]
    while stack:
        value = stack.pop()
        count += 1
        if count > limit:
            raise ValueError(
                f"{where}: expands to more than {limit:,} values (YAML aliases repeated inside each other, a "
                "'billion laughs' document); no setting needs that many: write the values out."
            )
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)


def check_path_segment(name: str, value: Any, allow_empty: bool = False) -> Any:
    """`value` when it can be one file or folder name inside the folder the user chose; a ValueError naming `name`.

    Refused: a path separator or `..` (it would write outside that folder), control and invisible format
    characters (a newline, a right-to-left override: a name that reads as another), and names over 255 bytes.
    """
    if not isinstance(value, str):
        return value  # a number (a logger's version) is a name as it is
    problem = None
    if value in ("", ".", ".."):
        problem = None if value == "" and allow_empty else "it names no file or folder of its own"
    elif "/" in value or "\\" in value:
        problem = "it holds a path separator (it would write outside the folder it belongs in)"
    elif bad := [c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")]:
        problem = f"it holds the control or invisible character {ascii(bad[0])}"
    elif len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        problem = (
            f"it is {len(value.encode('utf-8', 'surrogatepass'))} bytes long, over the {MAX_NAME_BYTES} a name may have"
        )
    if problem:
        shown = ascii(value) if len(value) <= 80 else f"{ascii(value[:40])}...({len(value)} characters)"
        raise ValueError(f"{name}={shown} cannot be a file or folder name: {problem}; give a plain name.")
    return value


NOT_NETWORK = ("optimizer", "scheduler", "input_shape")  # a model's settings that do not make its network


def network(model: dict[str, Any], defaults: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """What a model config (`class_path`, `init_args`) trains: its class name and its shape arguments; `defaults`
    fill the arguments a terser config left out."""
    # Through JSON, so that a tuple in hyperparameters equals a list in results.json; None is the default (a dumped
    # config leaves it out). LightningCLI adds `_class_path` and `_instantiator` to hyperparameters: not the network.
    init_args = {**(defaults or {}), **(model.get("init_args") or {})}
    kept = {k: v for k, v in init_args.items() if k not in NOT_NETWORK and v is not None and not k.startswith("_")}
    if "activation" in kept:  # Autoencoder: unset code/decoder activations follow `activation`
        kept.setdefault("code_activation", kept["activation"])
        kept.setdefault("decoder_activation", kept["activation"])
    return str(model.get("class_path", "")).rsplit(".", 1)[-1], json.loads(json.dumps(kept, default=str))


def same_network(config: dict[str, Any], other: dict[str, Any], defaults: dict[str, Any] | None = None) -> bool:
    """Whether two run configs train the same network (model class and shape; not the optimizer or the data): the
    one definition a denoising run's plain reference and the report's plain twins use."""
    return network(config.get("model") or {}, defaults) == network(other.get("model") or {}, defaults)
