"""LoRA: a frozen linear layer plus a trainable low-rank update (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large
Language Models", section 4.1).

    y = x W^T + b + dropout(x) A^T B^T * alpha / r        W (out, in), b frozen; A (r, in), B (out, r) trained

A starts as a linear layer's weight does (Kaiming-uniform, as peft initializes it) and B at zero, so an adapted layer
first computes exactly what its base layer computed. `merged()` folds the update into the weight, W + (alpha / r) B A,
and returns a plain `nn.Linear`. Parameter names follow peft's (`lora_A.weight`, `lora_B.weight`), and the base
layer's own parameters keep theirs (`weight`, `bias`), so the model's state dict holds the base weights under their
usual keys and the adapter's beside them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LoRALinear(nn.Module):
    """`base` (an nn.Linear, whose parameters this module takes over) plus a rank-`rank` update scaled by
    `alpha / rank`, with `dropout` on the update's input."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight  # (out, in): the same Parameter as the base layer's
        self.bias = base.bias  # (out,) or None
        w = base.weight
        self.lora_A = nn.Linear(self.in_features, rank, bias=False, device=w.device, dtype=w.dtype)  # (r, in)
        self.lora_B = nn.Linear(rank, self.out_features, bias=False, device=w.device, dtype=w.dtype)  # (out, r)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # peft's default ("init_lora_weights": true)
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        return F.linear(x, self.weight, self.bias) + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """The update to the weight, (alpha / r) B A: (out, in)."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain nn.Linear computing what this layer computes in eval mode: weight W + (alpha / r) B A."""
        w = self.weight
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device=w.device,
                           dtype=w.dtype)
        linear.weight.copy_(w + self.delta_weight().to(w.dtype))
        if self.bias is not None:
            linear.bias.copy_(self.bias)
        return linear

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, alpha={self.alpha}"
