"""GPT: a decoder-only Transformer language model (Radford et al. 2018, 2019; nanoGPT's layout).

    input_ids (B, T) -> token embedding (+ learned positions) (B, T, C) -> dropout
        -> n_layers pre-norm blocks of causal self-attention and a feed-forward network (B, T, C)
        -> final norm -> linear head (B, T, V): at every position the logits of the next token

Trained by self-supervision: `labels` (B, T) are the next tokens (the data shifts them, the model does not), -100
ignored. The context window (`context`) is part of the config: the most tokens the model reads at once, and the size
of its learned position table. Choices, by name: positions `learned` (GPT-2) or `rotary` (RoPE, Su et al. 2021);
norm `layernorm` (GPT-2) or `rmsnorm`; feed-forward `mlp` with activation `gelu_tanh` (GPT-2's "gelu_new") or
`swiglu` (Shazeer 2020); `tie_weights` shares the token embedding with the head (Press & Wolf 2017). Initialization
follows GPT-2: weights ~ N(0, 0.02), biases 0, and the projections that write into the residual stream scaled by
1 / sqrt(2 * n_layers), so the stream's variance does not grow with depth.

A padded batch carries `attention_mask` (B, T): 1 for real tokens, 0 for padding. Padding keys are masked out, and a
row's positions count from its first real token, so a left-padded prompt sees the positions it would see alone.

Generation (see `dlforge.llm.generate`) reads the prompt once and then one token at a time, keeping every layer's
keys and values: `cache = model.init_state(B)`, then `logits, cache = model.step(input_ids, cache, attention_mask)`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, ValidationInfo, field_validator
from pydantic.dataclasses import dataclass
from torch import nn
from torch.utils.checkpoint import checkpoint

from dlforge.layers.activations import ACTIVATIONS
from dlforge.layers.attention import KVCache, padding_mask
from dlforge.layers.embeddings import RotaryEmbedding
from dlforge.layers.norms import make_norm
from dlforge.layers.transformer import TransformerBlock
from dlforge.models.output import Output
from dlforge.registry import register_model

EXAMPLE_LENGTH = 16  # tokens per row of `example_batch`
INIT_STD = 0.02  # GPT-2's initializer_range


@dataclass(config=ConfigDict(extra="forbid"))
class GPTConfig:
    vocab_size: int = Field(65, ge=2, description="set from the data (the tokenizer's vocabulary)")
    context: int = Field(256, ge=1, description="the context window: the most tokens the model reads at once")
    dim: int = Field(128, ge=1, description="width of the residual stream (GPT-2's n_embd)")
    n_layers: int = Field(4, ge=1, description="Transformer blocks (GPT-2's n_layer)")
    n_heads: int = Field(4, ge=1, description="attention heads per block (GPT-2's n_head); dim / n_heads channels each")
    positions: Literal["learned", "rotary"] = Field("learned", description="learned (GPT-2) or rotary (RoPE)")
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = Field(1e-5, gt=0)
    ffn: Literal["mlp", "swiglu"] = Field("mlp", description="mlp (Linear, act, Linear) or swiglu (gated, SiLU)")
    ffn_hidden: int | None = Field(None, ge=1, description="default: 4 * dim (mlp), 8/3 * dim up to a multiple of 8")
    act: str = Field("gelu_tanh", description="the mlp's activation; GPT-2: gelu_tanh")
    bias: bool = Field(True, description="biases in the linear layers and LayerNorms (GPT-2: true)")
    tie_weights: bool = Field(True, description="share the token embedding with the output head")
    dropout: float = Field(0.0, ge=0, lt=1, description="on embeddings, attention weights and sublayer outputs")

    @field_validator("n_heads")
    @classmethod
    def _heads_divide_dim(cls, v: int, info: ValidationInfo) -> int:
        dim = info.data.get("dim")
        if dim is not None and dim % v:
            raise ValueError(f"must divide dim ({dim})")
        return v

    @field_validator("positions")
    @classmethod
    def _rotary_even(cls, v: str, info: ValidationInfo) -> str:
        dim, heads = info.data.get("dim"), info.data.get("n_heads")
        if v == "rotary" and dim and heads and (dim // heads) % 2:
            raise ValueError(f"rotary needs an even head size; dim / n_heads is {dim // heads}")
        return v

    @field_validator("act")
    @classmethod
    def _known_act(cls, v: str) -> str:
        if v not in ACTIVATIONS:
            raise ValueError(f"expected one of {', '.join(ACTIVATIONS)}")
        return v

    @property
    def hidden(self) -> int:
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        if self.ffn == "mlp":
            return 4 * self.dim
        return 8 * math.ceil(8 * self.dim / 3 / 8)  # LLaMA: 2/3 of 4 * dim, so the gated FFN costs the same


class GPT(nn.Module):
    supports_activation_checkpointing = True
    supports_padding = True  # generation may batch prompts of different lengths (left padding, attention_mask)

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.dim)
        self.pos_emb = nn.Embedding(c.context, c.dim) if c.positions == "learned" else None
        self.rotary = RotaryEmbedding(c.dim // c.n_heads) if c.positions == "rotary" else None
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(c.dim, c.n_heads, c.hidden, ffn=c.ffn, act=c.act, norm=c.norm, norm_eps=c.norm_eps,
                             norm_first=True, bias=c.bias, dropout=c.dropout, attn_dropout=c.dropout)
            for _ in range(c.n_layers))
        self.norm = make_norm(c.norm, c.dim, eps=c.norm_eps, bias=c.bias)
        self.head = nn.Linear(c.dim, c.vocab_size, bias=False)
        if c.tie_weights:
            self.head.weight = self.tok_emb.weight  # (V, C) serves both ways
        self.activation_checkpointing = False
        self.apply(_init_weights)
        for block in self.blocks:  # the residual projections (GPT-2 paper, section 2.3)
            for proj in (block.attn.proj, block.ffn.proj):
                nn.init.normal_(proj.weight, mean=0.0, std=INIT_STD / math.sqrt(2 * c.n_layers))

    # --- the network -------------------------------------------------------------------------------------------

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      cache: KVCache | None = None) -> torch.Tensor:
        """input_ids (B, T) -> the final norm's output (B, T, C).

        attention_mask (B, past + T): 1 for real tokens, 0 for padding, over every token read so far (those in
        `cache` first). Without it every token is real and positions run on from the cache's length."""
        b, t = input_ids.shape
        past = cache.length if cache is not None else 0
        if past + t > self.config.context:
            raise ValueError(f"{past + t} tokens exceed the model's context window of {self.config.context} "
                             "(model.context)")
        mask = position_ids = None
        if attention_mask is not None:
            mask = padding_mask(attention_mask)  # (B, 1, 1, past + T)
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]  # (B, T)
        x = self.tok_emb(input_ids)  # (B, T, C)
        if self.pos_emb is not None:
            # no padding: a slice of the table, broadcast over the batch (no index tensor on the decode path)
            x = x + (self.pos_emb(position_ids) if position_ids is not None else self.pos_emb.weight[past:past + t])
        rotary = None
        if self.rotary is not None:
            if position_ids is None:
                position_ids = torch.arange(past, past + t, device=input_ids.device)[None]  # (1, T)
            rotary = self.rotary(position_ids)  # cos, sin (B, 1, T, head_dim)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            layer_cache = cache.layers[i] if cache is not None else None
            if self.activation_checkpointing and self.training and layer_cache is None:
                x = checkpoint(block, x, mask, True, rotary, use_reentrant=False)  # recompute in backward
            else:
                x = block(x, mask, causal=True, rotary=rotary, cache=layer_cache)
        return self.norm(x)

    def forward(self, batch: dict[str, torch.Tensor]) -> Output:
        logits = self.head(self.hidden_states(batch["input_ids"], batch.get("attention_mask")))  # (B, T, V)
        loss = None
        if "labels" in batch:
            loss = F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
        return Output(logits=logits, loss=loss)

    # --- generation --------------------------------------------------------------------------------------------

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> KVCache:
        """An empty KV cache for `batch_size` rows and a whole context window, on `device` (default: the model's)."""
        c = self.config
        w = self.tok_emb.weight
        return KVCache(c.n_layers, batch_size, c.n_heads, c.dim // c.n_heads, c.context,
                       device=w.device if device is None else device, dtype=w.dtype)

    def step(self, input_ids: torch.Tensor, state: KVCache, attention_mask: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, KVCache]:
        """Read input_ids (B, T) after the tokens in `state` (which grows by T); return logits (B, T, V) and it.

        attention_mask (B, past + T) covers the cached tokens and these (see `hidden_states`)."""
        return self.head(self.hidden_states(input_ids, attention_mask, cache=state)), state

    # --- size ----------------------------------------------------------------------------------------------------

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters, each tied tensor once; `non_embedding` leaves out the position table (a lookup, no FLOPs).
        The token embedding stays in when tied: as the head it costs a matmul."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and self.pos_emb is not None:
            n -= self.pos_emb.weight.numel()
        if non_embedding and not self.config.tie_weights:
            n -= self.tok_emb.weight.numel()
        return n

    def flops_per_token(self, context: int | None = None) -> int:
        """Training FLOPs (forward + backward) per token at `context` tokens per row (default: the whole window):
        6 N for the weights plus 12 L T C for attention's scores and weighted sum (PaLM, Chowdhery et al. 2022,
        appendix B; nanoGPT's estimate_mfu). Forward only is a third of it."""
        c = self.config
        t = c.context if context is None else context
        return 6 * self.num_params() + 12 * c.n_layers * t * c.dim

    def example_batch(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Random tokens with their next tokens as labels, a few ignored (-100), as padding would be."""
        t = min(EXAMPLE_LENGTH, self.config.context)
        ids = torch.randint(0, self.config.vocab_size, (batch_size, t + 1), generator=generator)
        labels = ids[:, 1:].clone()
        labels[:, :2] = -100
        return {"input_ids": ids[:, :-1], "labels": labels}


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


# --- presets -----------------------------------------------------------------------------------------------------


@register_model(GPTConfig)
def gpt(**overrides) -> GPT:
    """GPT, small: 4 layers, 4 heads, 128 wide, context 256 (the GPT-2 recipe at a CPU's scale)."""
    return GPT(GPTConfig(**overrides))


@register_model(GPTConfig)
def gpt_rope(**overrides) -> GPT:
    """GPT with rotary positions, RMSNorm, a SwiGLU MLP and no biases (the LLaMA recipe), small."""
    return GPT(GPTConfig(**{"positions": "rotary", "norm": "rmsnorm", "ffn": "swiglu", "bias": False, **overrides}))


@register_model(GPTConfig)
def gpt2(**overrides) -> GPT:
    """GPT-2 small's shape (124M): 12 layers, 12 heads, 768 wide, context 1024, vocabulary 50257."""
    shape = {"vocab_size": 50257, "context": 1024, "dim": 768, "n_layers": 12, "n_heads": 12}
    return GPT(GPTConfig(**{**shape, **overrides}))
