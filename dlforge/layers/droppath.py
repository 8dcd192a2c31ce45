"""Stochastic depth (Huang et al. 2016, "Deep networks with stochastic depth"): drop a residual branch per sample.

    x = x + DropPath(p)(branch(x))

In training each sample's branch output is zeroed with probability p and kept, scaled by 1 / (1 - p), otherwise,
so its expectation is the branch output; in eval it is the identity. The semantics of timm's `drop_path` (with
`scale_by_keep`): one Bernoulli(1 - p) draw per sample from torch's global RNG, broadcast over every other dimension,
so the layer takes (B, C, H, W) feature maps and (B, T, C) token sequences alike.
"""

from __future__ import annotations

import torch
from torch import nn


class DropPath(nn.Module):
    """Zero a sample's residual branch with probability `p` in training and scale the kept ones by 1 / (1 - p)."""

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"drop-path rate: expected 0 <= p < 1, got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = x.new_empty(x.shape[0], *(1,) * (x.ndim - 1)).bernoulli_(1 - self.p)  # (B, 1, ..., 1)
        return x * keep / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"
