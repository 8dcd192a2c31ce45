"""The Transformer block that GPT, BERT, the encoder-decoder and ViT are stacks of.

    pre-norm  (GPT-2, ViT; Xiong et al. 2020):   x = x + attn(norm(x));  x = x + ffn(norm(x))
    post-norm (BERT, Vaswani et al. 2017):       x = norm(x + attn(x));  x = norm(x + ffn(x))

A decoder block of the encoder-decoder (`cross_attention=True`) has a second attention between the two, whose
queries come from the decoder and whose keys and values come from the encoder's output (`memory`). Dropout is applied
to each sublayer's output before it joins the residual stream; with `drop_path` (stochastic depth, ViT/DeiT as timm's
Block) that output is also dropped for whole samples, each sublayer drawing its own.
"""

from __future__ import annotations

import torch
from torch import nn

from dlforge.layers.attention import LayerCache, MultiHeadAttention
from dlforge.layers.droppath import DropPath
from dlforge.layers.ffn import make_ffn
from dlforge.layers.norms import make_norm


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, n_heads: int, ffn_hidden: int, ffn: str = "mlp", act: str = "gelu",
                 norm: str = "layernorm", norm_eps: float | None = None, norm_first: bool = True, bias: bool = True,
                 dropout: float = 0.0, attn_dropout: float = 0.0, cross_attention: bool = False,
                 memory_dim: int | None = None, drop_path: float = 0.0):
        super().__init__()
        self.norm_first = norm_first
        self.attn_norm = make_norm(norm, dim, eps=norm_eps, bias=bias)
        self.attn = MultiHeadAttention(dim, n_heads, bias=bias, dropout=attn_dropout)
        self.cross = None
        if cross_attention:
            self.cross_norm = make_norm(norm, dim, eps=norm_eps, bias=bias)
            self.cross = MultiHeadAttention(dim, n_heads, bias=bias, dropout=attn_dropout, cross=True,
                                            memory_dim=memory_dim)
        self.ffn_norm = make_norm(norm, dim, eps=norm_eps, bias=bias)
        self.ffn = make_ffn(ffn, dim, ffn_hidden, act=act, bias=bias, dropout=dropout)  # drops its own output
        self.drop = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False,
                rotary: tuple[torch.Tensor, torch.Tensor] | None = None, cache: LayerCache | None = None,
                memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C). `mask` for self-attention, `memory_mask` for cross-attention (see attention.py);
        `cache` holds this block's past keys and values (and the memory's, for cross-attention) when generating."""
        x = self._sublayer(x, self.attn_norm, lambda h: self.drop(self.attn(h, mask, causal, rotary=rotary,
                                                                            cache=cache)))
        if self.cross is not None:
            x = self._sublayer(x, self.cross_norm, lambda h: self.drop(self.cross(h, memory_mask, memory=memory,
                                                                                  cache=cache)))
        return self._sublayer(x, self.ffn_norm, self.ffn)

    def attention_weights(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False
                          ) -> torch.Tensor:
        """The self-attention probabilities (B, H, T, T) this block computes for its input x (B, T, C)."""
        return self.attn.attention_weights(self.attn_norm(x) if self.norm_first else x, mask, causal)

    def _sublayer(self, x: torch.Tensor, norm: nn.Module, fn) -> torch.Tensor:
        if self.norm_first:
            return x + self.drop_path(fn(norm(x)))
        return norm(x + self.drop_path(fn(x)))
