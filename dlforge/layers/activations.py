"""Activation functions picked by name, from one factory."""

from __future__ import annotations

from torch import nn


class GELUTanh(nn.GELU):
    """GELU in Hendrycks & Gimpel's tanh approximation: GPT-2's "gelu_new"."""

    def __init__(self):
        super().__init__(approximate="tanh")


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "gelu_tanh": GELUTanh,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "identity": nn.Identity,
}


def make_activation(name: str) -> nn.Module:
    """`make_activation("gelu")` -> nn.GELU(). Names: the keys of ACTIVATIONS."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()
