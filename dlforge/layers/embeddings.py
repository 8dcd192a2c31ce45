"""Positional encodings: how a Transformer, which sees a set, learns the order of its tokens.

    sinusoidal   fixed sin/cos waves of geometrically spaced wavelengths (Vaswani et al. 2017, section 3.5),
                 added to the token embeddings: SinusoidalPositions(max_len, dim)(position_ids) -> (B, T, C)
    learned      one trained vector per position (GPT-2, BERT): a plain nn.Embedding(max_len, dim)
    rotary       RoPE (Su et al. 2021): queries and keys are rotated by an angle proportional to their position, so
                 attention scores depend on relative positions; RotaryEmbedding(head_dim)(position_ids) -> (cos, sin),
                 applied inside attention with `apply_rotary`. The "rotate half" layout of GPT-NeoX and LLaMA.

Position ids are explicit (B, T) tensors, so a left-padded batch can start every row at position 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_table(max_len: int, dim: int) -> torch.Tensor:
    """(max_len, dim): PE[p, 2i] = sin(p / 10000^(2i/dim)), PE[p, 2i+1] = cos(p / 10000^(2i/dim))."""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]  # (L, 1)
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # (dim/2,)
    table = torch.zeros(max_len, dim)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq[: dim // 2])
    return table


class SinusoidalPositions(nn.Module):
    """Fixed sinusoidal encodings of position ids (B, T) -> (B, T, dim); nothing to train, nothing saved."""

    def __init__(self, max_len: int, dim: int):
        super().__init__()
        self.register_buffer("table", sinusoidal_table(max_len, dim), persistent=False)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return self.table[position_ids]


class RotaryEmbedding(nn.Module):
    """cos and sin of the rotation angles for position ids (B, T): each (B, 1, T, head_dim), ready for heads."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dimension, got {head_dim}")
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (D/2,)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = position_ids[:, None, :, None].float() * self.inv_freq  # (B, 1, T, D/2)
        angles = torch.cat([angles, angles], dim=-1)  # (B, 1, T, D): the two halves rotate together
        return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, H, T, D) pairwise (channel i with channel i + D/2) by the angles whose cos and sin are given."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)
