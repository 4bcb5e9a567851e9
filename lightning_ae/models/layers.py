"""Small building blocks shared by the models: named activations and losses."""

from __future__ import annotations

from typing import Literal, get_args

from torch import nn

from lightning_ae.checks import check_positive_int

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "linear": nn.Identity,
}
# The choices as types: the CLI lists them in --help and refuses anything else before building a model.
Activation = Literal["sigmoid", "relu", "tanh", "linear"]
Loss = Literal["bce", "mse"]
OutputActivation = Literal["sigmoid", "tanh", "linear"]
LOSSES: tuple[str, ...] = get_args(Loss)
OUTPUT_ACTIVATIONS: tuple[str, ...] = get_args(OutputActivation)


def activation(name: str, parameter: str = "activation") -> nn.Module:
    """The activation module called `name`; a ValueError names the parameter otherwise."""
    if name not in ACTIVATIONS:
        raise ValueError(f"{parameter}={name!r} is not a known activation; valid values: {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[name]()


def check_loss(name: str) -> str:
    if name not in LOSSES:
        raise ValueError(f"loss={name!r} is not a known loss; valid values: {list(LOSSES)}.")
    return name


def check_code_dim(code_dim: int, parameter: str = "code_dim") -> int:
    meaning = "the code dimension d'" if parameter == "code_dim" else ""
    return check_positive_int(parameter, code_dim, meaning=meaning)


def check_output(output_activation: str, loss: str) -> None:
    """The output activation must produce what the loss scores: BCE needs probabilities (a sigmoid)."""
    if output_activation not in OUTPUT_ACTIVATIONS:
        raise ValueError(
            f"output_activation={output_activation!r} is not valid; valid values: {list(OUTPUT_ACTIVATIONS)}."
        )
    if loss == "bce" and output_activation != "sigmoid":
        raise ValueError(
            f"loss='bce' needs output_activation='sigmoid' (BCE scores values in (0, 1)); "
            f"with output_activation={output_activation!r} use loss='mse'."
        )
