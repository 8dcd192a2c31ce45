"""The position-wise feed-forward network of a Transformer block, picked by name.

    mlp      Linear(C, H) -> activation -> Linear(H, C) -> dropout (Vaswani et al. 2017, section 3.3; GPT-2, BERT)
    swiglu   (SiLU(x W1) * x W3) W2 -> dropout (Shazeer 2020, "GLU Variants Improve Transformer"; LLaMA): a gated
             unit; the usual hidden size is 2/3 of the MLP's 4C, so both cost about the same
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dlforge.layers.activations import make_activation

FFNS = ("mlp", "swiglu")


class FeedForward(nn.Module):
    """The `mlp` feed-forward network: Linear(C, H) -> activation -> Linear(H, C) -> dropout."""

    def __init__(self, dim: int, hidden: int, act: str = "gelu", bias: bool = True, dropout: float = 0.0):
        super().__init__()
        self.fc = nn.Linear(dim, hidden, bias=bias)
        self.act = make_activation(act)
        self.proj = nn.Linear(hidden, dim, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(self.act(self.fc(x))))  # (B, T, C) -> (B, T, H) -> (B, T, C)


class SwiGLU(nn.Module):
    """The `swiglu` feed-forward network: (SiLU(x W1) * x W3) W2 -> dropout."""

    def __init__(self, dim: int, hidden: int, bias: bool = False, dropout: float = 0.0):
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=bias)  # W1
        self.up = nn.Linear(dim, hidden, bias=bias)  # W3
        self.proj = nn.Linear(hidden, dim, bias=bias)  # W2
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.silu(self.gate(x)) * self.up(x)))


def make_ffn(kind: str, dim: int, hidden: int, act: str = "gelu", bias: bool = True, dropout: float = 0.0) -> nn.Module:
    """`make_ffn("mlp", 128, 512, act="gelu_tanh")` or `make_ffn("swiglu", 128, 344)` (the activation is SiLU)."""
    if kind == "mlp":
        return FeedForward(dim, hidden, act, bias, dropout)
    if kind == "swiglu":
        return SwiGLU(dim, hidden, bias, dropout)
    raise ValueError(f"unknown feed-forward network {kind!r}; expected one of {', '.join(FFNS)}")
