"""Normalization layers picked by name: batchnorm, layernorm, rmsnorm, none."""

from __future__ import annotations

from torch import nn

NORMS = ("batchnorm", "layernorm", "rmsnorm", "none")


def make_norm(name: str, dim: int, eps: float | None = None, bias: bool = True) -> nn.Module:
    """A norm over the last (feature) dimension of a (B, dim) tensor; `none` is the identity.

    `eps`: the variance floor (None: torch's default; BERT uses 1e-12, GPT-2 1e-5); `bias=False` drops LayerNorm's
    shift."""
    if name == "batchnorm":
        return nn.BatchNorm1d(dim, eps=1e-5 if eps is None else eps)
    if name == "layernorm":
        return nn.LayerNorm(dim, eps=1e-5 if eps is None else eps, bias=bias)
    if name == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {name!r}; expected one of {', '.join(NORMS)}")


def is_norm(module: nn.Module) -> bool:
    """True for normalization layers, whose weights are exempt from weight decay."""
    return isinstance(module, nn.modules.batchnorm._NormBase | nn.LayerNorm | nn.RMSNorm | nn.GroupNorm)
