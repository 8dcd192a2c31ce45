"""Positional encodings: how a Transformer, which sees a set, learns the order of its tokens.

    sinusoidal   fixed sin/cos waves of geometrically spaced wavelengths (Vaswani et al. 2017, section 3.5),
                 added to the token embeddings: SinusoidalPositions(max_len, dim)(position_ids) -> (B, T, C)
    learned      one trained vector per position (GPT-2, BERT): a plain nn.Embedding(max_len, dim)
    rotary       RoPE (Su et al. 2021): queries and keys are rotated by an angle proportional to their position, so
                 attention scores depend on relative positions; RotaryEmbedding(head_dim)(position_ids) -> (cos, sin),
                 applied inside attention with `apply_rotary`. The "rotate half" layout of GPT-NeoX and LLaMA.
    patch        images as tokens (Dosovitskiy et al. 2020, the Vision Transformer): PatchEmbedding cuts an image into
                 p x p patches and projects each; their positions form a 2-D grid, learned or `sinusoidal_table_2d`,
                 and `resample_positions` fits a grid's table to another image size (timm's resample_abs_pos_embed).

Position ids are explicit (B, T) tensors, so a left-padded batch can start every row at position 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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


# --- images: patches on a grid ---------------------------------------------------------------------------------


class PatchEmbedding(nn.Module):
    """Cut images into p x p patches and project each to `dim` channels: one conv of kernel and stride p (ViT, eq. 1).

    (B, C, H, W) -> (B, H/p * W/p, dim), the patches row by row; H and W must be multiples of p."""

    def __init__(self, in_channels: int, dim: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """(rows, columns) of patches in an image of that size."""
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"a {height}x{width} image is not a whole number of {p}x{p} patches; resize it to "
                             f"multiples of {p}")
        return height // p, width // p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.grid(*x.shape[-2:])
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, dim, H/p, W/p) -> (B, H/p * W/p, dim)


def sinusoidal_table_2d(rows: int, cols: int, dim: int) -> torch.Tensor:
    """(rows * cols, dim), row by row: the first dim/2 channels are the `sinusoidal_table` of the cell's row, the last
    dim/2 that of its column (MAE's 2-D sin-cos positions, He et al. 2021). `dim` must be even."""
    if dim % 2:
        raise ValueError(f"2-D sinusoidal positions need an even dim, got {dim}")
    half = dim // 2
    by_row = sinusoidal_table(rows, half)[:, None].expand(rows, cols, half)
    by_col = sinusoidal_table(cols, half)[None].expand(rows, cols, half)
    return torch.cat([by_row, by_col], dim=-1).reshape(rows * cols, dim)


def resample_positions(table: torch.Tensor, grid: tuple[int, int], new_grid: tuple[int, int],
                       prefix: int = 0) -> torch.Tensor:
    """A position table (1, prefix + rows * cols, C) of a grid of patches, fitted to `new_grid` (rows', cols').

    The grid part is resampled as an image of C channels, bicubic and antialiased (which matters when shrinking), as
    timm's `resample_abs_pos_embed`; the first `prefix` rows (a class token's position) are kept apart, unchanged.
    The same tensor comes back when the grid is the same."""
    grid, new_grid = tuple(grid), tuple(new_grid)
    if new_grid == grid:
        return table
    head, cells = table[:, :prefix], table[:, prefix:]
    c = cells.shape[-1]
    cells = cells.reshape(1, *grid, c).permute(0, 3, 1, 2).float()  # (1, C, rows, cols)
    cells = F.interpolate(cells, size=new_grid, mode="bicubic", antialias=True, align_corners=False)
    cells = cells.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], c).to(table.dtype)
    return torch.cat([head, cells], dim=1)  # (1, prefix + rows' * cols', C)
