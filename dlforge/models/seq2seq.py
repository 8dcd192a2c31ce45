"""The encoder-decoder Transformer for translation (Vaswani et al. 2017, "Attention Is All You Need").

    source ids (B, S) -> embedding * sqrt(C) + sinusoidal positions -> dropout
      -> encoder blocks: self-attention over the real source tokens (padding masked), FFN -> [final norm]
      = memory (B, S, C)
    target ids (B, T), shifted right (BOS first) -> embedding * sqrt(C) + sinusoidal positions -> dropout
      -> decoder blocks: causal self-attention, cross-attention to the memory, FFN -> [final norm]
      -> logits (B, T, V) through the transposed target embedding (Press & Wolf 2017)

Pre-norm (`norm_first`, Xiong et al. 2020; a final norm after each stack) trains without the long warmup that
post-norm (the paper's, `norm_first: false`) needs. With one shared vocabulary (`target_vocab_size: null`) a single
matrix embeds source and target tokens and projects to the output, as in the paper (section 3.4); with separate
vocabularies the source has its own embedding and the target embedding still serves the output projection. The loss
is cross-entropy with label smoothing (section 5.4), `labels` of -100 ignored.

Batches: `input_ids` / `attention_mask` (B, S) for the source, `decoder_input_ids` (B, T) for the teacher-forced
target (BOS + target) and, for the loss, `labels` (B, T) (target + EOS, -100 on padding). The target is padded on
the right, so causal attention alone keeps every real position away from padding.

Decoding (see `dlforge.llm.beam`) runs the encoder once, then one token at a time over a KV cache:

    state = model.start_decoding(input_ids, attention_mask)    # encodes; (N, V) logits come from state.step
    logits = state.step(torch.full((N, 1), model.config.bos_id))
    state.reorder(index)                                       # beam search: keep (or repeat) rows
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass
from torch import nn

from dlforge.layers.activations import ACTIVATIONS
from dlforge.layers.attention import KVCache, padding_mask
from dlforge.layers.embeddings import SinusoidalPositions
from dlforge.layers.transformer import TransformerBlock
from dlforge.models.output import Output
from dlforge.registry import register_model

EXAMPLE_SOURCE, EXAMPLE_TARGET = 9, 7  # tokens per row of `example_batch`


@dataclass(config=ConfigDict(extra="forbid"))
class Seq2SeqConfig:
    vocab_size: int = Field(8000, ge=4, description="set from the data: the source vocabulary, or the shared one")
    target_vocab_size: int | None = Field(None, ge=4, description="set from the data: the target vocabulary; null: "
                                          "one vocabulary and one embedding matrix for source, target and output")
    bos_id: int = Field(1, ge=0, description="set from the data: the token every decoder input starts with")
    eos_id: int = Field(2, ge=0, description="set from the data: the token that ends a sentence")
    dim: int = Field(256, ge=2, description="d_model: the width of embeddings and of every block")
    n_heads: int = Field(4, ge=1)
    encoder_layers: int = Field(3, ge=1)
    decoder_layers: int = Field(3, ge=1)
    ffn_hidden: int = Field(1024, ge=1, description="hidden width of the feed-forward networks (the paper: 4 dim)")
    act: str = Field("relu", description="activation of the feed-forward networks")
    norm_first: bool = Field(True, description="pre-norm (true) or the paper's post-norm (false)")
    dropout: float = Field(0.1, ge=0, lt=1, description="on embeddings and on every sublayer's output")
    attn_dropout: float = Field(0.0, ge=0, lt=1, description="on the attention weights")
    context: int = Field(256, ge=2, description="longest source or target, in tokens (positions)")
    label_smoothing: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> Seq2SeqConfig:
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.act not in ACTIVATIONS:
            raise ValueError(f"act {self.act!r}: expected one of {', '.join(ACTIVATIONS)}")
        target = self.target_vocab_size or self.vocab_size
        for key in ("bos_id", "eos_id"):
            if getattr(self, key) >= target:
                raise ValueError(f"{key} {getattr(self, key)} is outside the target vocabulary of {target}")
        return self


class DecodingState:
    """One decoding run: the encoder's memory, its padding mask and the decoder's KV cache, row for row."""

    def __init__(self, model: Seq2SeqTransformer, memory: torch.Tensor, memory_mask: torch.Tensor,
                 cache: KVCache):
        self.model, self.memory, self.memory_mask, self.cache = model, memory, memory_mask, cache

    def step(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Read the next target tokens (N, t) after those already read; return the next token's logits (N, V)."""
        return self.model.decode(input_ids, self.memory, memory_mask=self.memory_mask, cache=self.cache)[:, -1]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep the rows `index` (N',), in that order; a row may repeat (one source, several beams)."""
        self.memory = self.memory.index_select(0, index)
        self.memory_mask = self.memory_mask.index_select(0, index)
        self.cache.reorder(index)


class Seq2SeqTransformer(nn.Module):
    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.config = c = config
        self.source_embed = nn.Embedding(c.vocab_size, c.dim)
        # separate vocabularies: a target embedding of its own; shared: the source embedding serves (target_embed)
        self.separate_target = nn.Embedding(c.target_vocab_size, c.dim) if c.target_vocab_size is not None else None
        self.positions = SinusoidalPositions(c.context, c.dim)
        self.drop = nn.Dropout(c.dropout)
        block = dict(dim=c.dim, n_heads=c.n_heads, ffn_hidden=c.ffn_hidden, act=c.act, norm_first=c.norm_first,
                     dropout=c.dropout, attn_dropout=c.attn_dropout)
        self.encoder = nn.ModuleList(TransformerBlock(**block) for _ in range(c.encoder_layers))
        self.decoder = nn.ModuleList(TransformerBlock(**block, cross_attention=True) for _ in range(c.decoder_layers))
        # post-norm blocks end in a norm already; pre-norm stacks need one after their last block
        self.encoder_norm = nn.LayerNorm(c.dim) if c.norm_first else nn.Identity()
        self.decoder_norm = nn.LayerNorm(c.dim) if c.norm_first else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        # Xavier-uniform projections and zero biases (the reference tensor2tensor / fairseq setup); embeddings
        # N(0, 1/dim), so that after the sqrt(dim) scale a token vector has unit variance per channel.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for embed in (self.source_embed, self.separate_target):
            if embed is not None:
                nn.init.normal_(embed.weight, std=self.config.dim ** -0.5)

    @property
    def target_embed(self) -> nn.Embedding:
        return self.separate_target if self.separate_target is not None else self.source_embed

    def _embed(self, embed: nn.Embedding, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """ids (B, T) at positions start .. start + T - 1 -> (B, T, C)."""
        end = start + ids.shape[1]
        if end > self.config.context:
            raise ValueError(f"sequence of {end} tokens; the model has positions for model.context = "
                             f"{self.config.context}")
        positions = torch.arange(start, end, device=ids.device)  # (T,)
        return self.drop(embed(ids) * math.sqrt(self.config.dim) + self.positions(positions))

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Source ids (B, S), mask (B, S) with 1 for real tokens and 0 for padding -> memory (B, S, C)."""
        mask = padding_mask(attention_mask) if attention_mask is not None else None  # (B, 1, 1, S)
        x = self._embed(self.source_embed, input_ids)
        for block in self.encoder:
            x = block(x, mask=mask)
        return self.encoder_norm(x)

    def decode(self, decoder_input_ids: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None = None,
               cache: KVCache | None = None) -> torch.Tensor:
        """Target ids (B, T) reading memory (B, S, C) -> logits (B, T, V). `memory_mask` (B, 1, 1, S) bool, from
        `padding_mask`; with a `cache` the T tokens come after the cache.length already read."""
        start = cache.length if cache is not None else 0
        x = self._embed(self.target_embed, decoder_input_ids, start)
        for i, block in enumerate(self.decoder):
            x = block(x, causal=True, memory=memory, memory_mask=memory_mask,
                      cache=cache.layers[i] if cache is not None else None)
        return F.linear(self.decoder_norm(x), self.target_embed.weight)  # (B, T, V)

    def forward(self, batch: dict[str, torch.Tensor]) -> Output:
        source_mask = batch.get("attention_mask")
        memory = self.encode(batch["input_ids"], source_mask)
        memory_mask = padding_mask(source_mask) if source_mask is not None else None
        logits = self.decode(batch["decoder_input_ids"], memory, memory_mask)
        loss = None
        if "labels" in batch:  # mean over the target tokens; label smoothing as in section 5.4
            loss = F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=-100,
                                   label_smoothing=self.config.label_smoothing)
        return Output(logits=logits, loss=loss)

    @torch.no_grad()
    def start_decoding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                       max_len: int | None = None) -> DecodingState:
        """Encode a batch of sources (B, S) for token-by-token decoding of at most `max_len` target tokens (BOS
        included; default model.context); see `DecodingState`."""
        c = self.config
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        memory = self.encode(input_ids, attention_mask)
        param = self.source_embed.weight
        cache = KVCache(c.decoder_layers, len(input_ids), c.n_heads, c.dim // c.n_heads, min(max_len or c.context,
                        c.context), device=param.device, dtype=memory.dtype)
        return DecodingState(self, memory, padding_mask(attention_mask), cache)

    def example_batch(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        c = self.config
        source = torch.randint(3, c.vocab_size, (batch_size, EXAMPLE_SOURCE), generator=generator)
        target = torch.randint(3, c.target_vocab_size or c.vocab_size, (batch_size, EXAMPLE_TARGET),
                               generator=generator)
        mask = torch.ones_like(source)
        mask[0, -3:] = 0  # a padded source row
        labels = torch.cat([target[:, 1:], torch.full((batch_size, 1), c.eos_id)], dim=1)
        labels[0, -2:] = -100  # a padded target row
        return {"input_ids": source, "attention_mask": mask, "decoder_input_ids": target, "labels": labels}


# --- presets -----------------------------------------------------------------------------------------------------


@register_model(Seq2SeqConfig)
def transformer_seq2seq(**overrides) -> Seq2SeqTransformer:
    """Encoder-decoder Transformer for translation (pre-norm, 3 + 3 layers of 256 by default)."""
    return Seq2SeqTransformer(Seq2SeqConfig(**overrides))


@register_model(Seq2SeqConfig)
def transformer_base(**overrides) -> Seq2SeqTransformer:
    """The paper's base model: post-norm, 6 + 6 layers of 512, 8 heads, FFN 2048 (65M parameters with 37k tokens)."""
    return Seq2SeqTransformer(Seq2SeqConfig(**{"dim": 512, "n_heads": 8, "encoder_layers": 6, "decoder_layers": 6,
                                               "ffn_hidden": 2048, "norm_first": False, **overrides}))
