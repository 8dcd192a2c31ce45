"""Multi-head attention through `torch.nn.functional.scaled_dot_product_attention`, with masks and a KV cache.

Vaswani et al. 2017, "Attention Is All You Need", section 3.2: softmax(Q K^T / sqrt(d)) V in `n_heads` heads of
`dim / n_heads` channels each. One module serves every Transformer in dlforge:

    self-attention, causal (GPT, the decoder)      attn(x, causal=True)
    self-attention over padded batches (BERT)      attn(x, mask=padding_mask(attention_mask))
    cross-attention (the decoder reading memory)   attn(x, memory=encoder_out, mask=padding_mask(source_mask))
    generation with a KV cache                     attn(x_new, causal=True, cache=cache.layers[i])

Masks are boolean, True where a query may attend to a key, broadcastable to (B, H, Tq, Tk). Without a mask and
without cached keys, `causal=True` takes SDPA's own causal path (the fused, fastest kernels). The self-attention
projection is one fused (C -> 3C) linear layer: q, k, v in that order.

SDPA never forms the attention probabilities; `attn.attention_weights(x)` computes them on a side path, for looking
at where a model attends (ViT's attention maps), leaving `forward` on the fused kernels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dlforge.layers.embeddings import apply_rotary


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, Tk) with 1 for real tokens and 0 for padding -> (B, 1, 1, Tk) bool: every query may see the real keys."""
    return attention_mask.bool()[:, None, None, :]


def causal_mask(t_q: int, t_k: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(Tq, Tk) bool: query i (the last Tq of Tk positions) sees keys 0 .. i + Tk - Tq."""
    return torch.ones(t_q, t_k, dtype=torch.bool, device=device).tril(diagonal=t_k - t_q)


def combine_masks(mask: torch.Tensor | None, t_q: int, t_k: int, causal: bool,
                  own_key: bool = True) -> torch.Tensor | None:
    """The causal mask and a given mask, as one bool mask (None when nothing is masked).

    With `own_key`, every query also sees its own key (self-attention's diagonal): a padding query that could see
    nothing else would otherwise softmax over no key at all and give NaN. Its output is garbage, but garbage that
    padding never passes on (no real query attends to a padding key)."""
    if causal and t_q > 1:  # a single new query sees every cached key anyway
        c = causal_mask(t_q, t_k, device=mask.device if mask is not None else None)
        mask = c if mask is None else mask & c
    if mask is None or not own_key:
        return mask
    own = torch.zeros(t_q, t_k, dtype=torch.bool, device=mask.device)
    own[:, t_k - t_q:] = torch.eye(t_q, dtype=torch.bool, device=mask.device)
    return mask | own


class LayerCache:
    """One layer's cached keys and values, preallocated: (B, H, max_len, D) each, filled up to `length`.

    For cross-attention the memory's keys and values are computed once and kept (`static`)."""

    def __init__(self, batch: int, n_heads: int, head_dim: int, max_len: int, device: torch.device | str,
                 dtype: torch.dtype):
        self.k = torch.empty(batch, n_heads, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.empty_like(self.k)
        self.length = 0
        self.static: tuple[torch.Tensor, torch.Tensor] | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, H, T, D) after the cached positions; return all keys and values so far."""
        end = self.length + k.shape[2]
        if end > self.k.shape[2]:
            raise ValueError(f"KV cache full: {end} positions, room for {self.k.shape[2]}")
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep the rows `index` (beam search: the beams that survived), in that order."""
        self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)
        if self.static is not None:
            self.static = (self.static[0].index_select(0, index), self.static[1].index_select(0, index))


class KVCache:
    """Every layer's cache for one generation: `cache.layers[i]` goes to block i; `cache.length` positions so far."""

    def __init__(self, n_layers: int, batch: int, n_heads: int, head_dim: int, max_len: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.layers = [LayerCache(batch, n_heads, head_dim, max_len, device, dtype) for _ in range(n_layers)]

    @property
    def length(self) -> int:
        return self.layers[0].length

    def reorder(self, index: torch.Tensor) -> None:
        for layer in self.layers:
            layer.reorder(index)


class MultiHeadAttention(nn.Module):
    """Self-attention (one fused qkv projection) or cross-attention (`cross=True`: q from x, k and v from memory)."""

    def __init__(self, dim: int, n_heads: int, bias: bool = True, dropout: float = 0.0, cross: bool = False,
                 memory_dim: int | None = None):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim {dim} is not divisible by n_heads {n_heads}")
        self.n_heads, self.head_dim, self.dropout, self.cross = n_heads, dim // n_heads, dropout, cross
        if cross:
            self.q = nn.Linear(dim, dim, bias=bias)
            self.kv = nn.Linear(memory_dim or dim, 2 * dim, bias=bias)
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)

    def attention_weights(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False
                          ) -> torch.Tensor:
        """The self-attention probabilities softmax(Q K^T / sqrt(D)) over x (B, T, C): (B, H, T, T), each row summing
        to 1, as `forward` with the same mask would weigh the values (attention dropout aside)."""
        if self.cross:
            raise ValueError("attention_weights: a self-attention layer's; this one is cross-attention")
        t, c = x.shape[1], x.shape[2]
        q, k, _ = (self._heads(z) for z in self.qkv(x).split(c, dim=2))  # (B, H, T, D) each
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, H, T, T)
        full = combine_masks(mask, t, t, causal)
        if full is not None:
            scores = scores.masked_fill(~full, float("-inf"))
        return scores.softmax(dim=-1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False,
                memory: torch.Tensor | None = None, rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
                cache: LayerCache | None = None) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C). `rotary`: (cos, sin) of the T positions, from `RotaryEmbedding`."""
        b, t, c = x.shape
        if self.cross:
            q = self._heads(self.q(x))
            if cache is not None and cache.static is not None:
                k, v = cache.static  # the memory's keys and values, computed at the first step
            else:
                k, v = (self._heads(z) for z in self.kv(memory).split(c, dim=2))
                if cache is not None:
                    cache.static = (k, v)
        else:
            q, k, v = (self._heads(z) for z in self.qkv(x).split(c, dim=2))  # (B, H, T, D) each
            if rotary is not None:
                q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
            if cache is not None:
                k, v = cache.append(k, v)  # (B, H, past + T, D)
        t_k = k.shape[2]
        dropout = self.dropout if self.training else 0.0
        if mask is None and causal and t_k == t:  # nothing cached: SDPA's own causal kernels
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            full = combine_masks(mask, t, t_k, causal and not self.cross, own_key=not self.cross)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=full, dropout_p=dropout)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))  # (B, T, C)
