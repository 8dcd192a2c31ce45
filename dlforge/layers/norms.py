"""Normalization layers picked by name: batchnorm, layernorm, rmsnorm, none."""

from __future__ import annotations

from torch import nn

NORMS = ("batchnorm", "layernorm", "rmsnorm", "none")


def make_norm(name: str, dim: int) -> nn.Module:
    """A norm over the last (feature) dimension of a (B, dim) tensor; `none` is the identity."""
    if name == "batchnorm":
        return nn.BatchNorm1d(dim)
    if name == "layernorm":
        return nn.LayerNorm(dim)
    if name == "rmsnorm":
        return nn.RMSNorm(dim)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {name!r}; expected one of {', '.join(NORMS)}")


def is_norm(module: nn.Module) -> bool:
    """True for normalization layers, whose weights are exempt from weight decay."""
    return isinstance(module, nn.modules.batchnorm._NormBase | nn.LayerNorm | nn.RMSNorm | nn.GroupNorm)
