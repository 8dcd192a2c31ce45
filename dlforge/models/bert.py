"""BERT: a bidirectional Transformer encoder (Devlin et al. 2018, "BERT: Pre-training of Deep Bidirectional
Transformers for Language Understanding").

input_ids (B, T) -> token + position + token-type embeddings -> LayerNorm -> dropout (B, T, C) -> `n_layers`
post-norm Transformer blocks (x = norm(x + attn(x)); x = norm(x + ffn(x)), exact GELU, LayerNorm eps 1e-12), where
every token attends to every real token of its row (`attention_mask` hides the padding) -> hidden states (B, T, C).
On top, one head (`head`):

    mlm          masked-language-model head: dense -> GELU -> LayerNorm -> decoder tied to the token embeddings, plus
                 a bias -> logits (B, T, V), cross-entropy against `labels` (B, T), -100 ignored (section 3.1). In
                 training, only the labelled positions are decoded (the others' logits are 0): the decoder over
                 every position would cost a third of the step for nothing
    classifier   the pooler (dense + tanh on the [CLS] state, as BERT's; or on the mean over the real tokens with
                 `pooling: mean`) -> dropout -> linear -> logits (B, classes), cross-entropy against `y` (or
                 `labels`) (B,)
    none         no head: the logits are the hidden states (B, T, C) and there is no loss (feature extraction)

`embed()` gives sentence embeddings: the mean of the hidden states over the real tokens, L2-normalized by default
(what sentence-transformers' all-MiniLM-L6-v2 computes: Pooling(mean) then Normalize).

The module names follow dlforge's layers, not transformers'; `dlforge.llm.bert_weights` maps a transformers
BertModel / BertForMaskedLM / BertForSequenceClassification folder onto them (q, k, v into the fused qkv). For
transfer learning (`train.transfer`) the stages are the embeddings, each block and the head: the classifier's pooler
belongs to its (new) head, as in RoBERTa's classification head, so a masked-LM run's encoder is a complete backbone.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass
from torch import nn
from torch.utils.checkpoint import checkpoint

from dlforge.layers.attention import padding_mask
from dlforge.layers.transformer import TransformerBlock
from dlforge.models.output import Output
from dlforge.registry import register_model

EXAMPLE_LENGTH = 16  # tokens per row of `example_batch`
INIT_STD = 0.02  # BERT's initializer_range


class BertEmbeddings(nn.Module):
    """Token + learned position + token-type embeddings, then LayerNorm and dropout: (B, T) ids -> (B, T, C)."""

    def __init__(self, vocab_size: int, dim: int, context: int, type_vocab_size: int, eps: float, dropout: float):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim)
        self.positions = nn.Embedding(context, dim)
        self.token_types = nn.Embedding(type_vocab_size, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.drop = nn.Dropout(dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        t = input_ids.shape[1]
        positions = torch.arange(t, device=input_ids.device)  # (T,): every row starts at 0 (BERT pads on the right)
        x = self.tokens(input_ids) + self.positions(positions)  # (B, T, C)
        if token_type_ids is None:
            x = x + self.token_types.weight[0]  # segment A everywhere
        else:
            x = x + self.token_types(token_type_ids)
        return self.drop(self.norm(x))


class MaskedLMHead(nn.Module):
    """dense -> GELU -> LayerNorm -> decoder (weight tied to the token embeddings by the model) + bias: (B, T, V)."""

    def __init__(self, dim: int, vocab_size: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.decoder = nn.Linear(dim, vocab_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.act(self.dense(h))))  # (B, T, C) -> (B, T, V)


class ClassifierHead(nn.Module):
    """The pooler (dense + tanh) -> dropout -> linear: the pooled state (B, C) -> (B, classes)."""

    def __init__(self, dim: int, num_classes: int, dropout: float):
        super().__init__()
        self.pooler = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(dim, num_classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(torch.tanh(self.pooler(pooled))))


@dataclass(config=ConfigDict(extra="forbid"))
class BertConfig:
    """The shape of a BERT and its head. Defaults: a small BERT (4 layers, 192 wide), as `bert-shakespeare-mlm`."""

    vocab_size: int = Field(6000, ge=2, description="set from the data (the WordPiece vocabulary)")
    dim: int = Field(192, ge=1, description="hidden size C (BERT-base 768, MiniLM-L6 384)")
    n_layers: int = Field(4, ge=1)
    n_heads: int = Field(4, ge=1, description="attention heads; dim must be divisible by it")
    ffn_hidden: int = Field(768, ge=1, description="feed-forward width (BERT: 4 * dim)")
    context: int = Field(512, ge=1, description="positions with an embedding: the longest input (transformers' "
                                                "max_position_embeddings)")
    type_vocab_size: int = Field(2, ge=1, description="token types (segments A and B)")
    norm_eps: float = Field(1e-12, gt=0, description="LayerNorm eps (BERT: 1e-12)")
    dropout: float = Field(0.1, ge=0, lt=1, description="on the embeddings, every sublayer output and the head")
    attn_dropout: float = Field(0.1, ge=0, lt=1, description="on the attention probabilities")
    head: Literal["mlm", "classifier", "none"] = Field("mlm", description="masked-LM, sequence classifier or none")
    num_classes: int = Field(2, ge=2, description="classifier head: set from the data")
    pooling: Literal["cls", "mean"] = Field("cls", description="classifier head: read the [CLS] state (BERT) or the "
                                                               "mean over the real tokens (sentence-transformers)")

    @model_validator(mode="after")
    def _heads_divide(self) -> BertConfig:
        if self.dim % self.n_heads:
            raise ValueError(f"n_heads: {self.n_heads} does not divide dim {self.dim}")
        return self


class Bert(nn.Module):
    supports_activation_checkpointing = True

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = c = config
        self.embeddings = BertEmbeddings(c.vocab_size, c.dim, c.context, c.type_vocab_size, c.norm_eps, c.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(c.dim, c.n_heads, c.ffn_hidden, act="gelu", norm_eps=c.norm_eps, norm_first=False,
                             dropout=c.dropout, attn_dropout=c.attn_dropout)
            for _ in range(c.n_layers))  # fmt: skip
        if c.head == "mlm":
            self.head = MaskedLMHead(c.dim, c.vocab_size, c.norm_eps)
        elif c.head == "classifier":
            self.head = ClassifierHead(c.dim, c.num_classes, c.dropout)
        else:
            self.head = nn.Identity()
        # transfer learning: the backbone's stages in forward order, then the head (see dlforge.train.transfer)
        self.stage_names = ("embeddings", *(f"blocks.{i}" for i in range(c.n_layers)), "head")
        self.activation_checkpointing = False
        self.apply(_init_weights)
        if c.head == "mlm":
            self.head.decoder.weight = self.embeddings.tokens.weight  # (V, C) serves both ways (section A.2)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states (B, T, C) of input_ids (B, T); `attention_mask` (B, T) is 1 for real tokens, 0 for padding.

        A padding position's state is not meaningful (it attends to the real tokens and itself; trailing columns
        that are padding in every row are not computed at all and come back as zeros) and no real token ever
        attends to it, so a row gives the same states at its real positions padded or not."""
        if input_ids.shape[1] > self.config.context:
            raise ValueError(f"input of {input_ids.shape[1]} tokens is longer than model.context "
                             f"{self.config.context}; truncate it")
        t, mask = input_ids.shape[1], None
        if attention_mask is not None and torch.compiler.is_exporting():  # one graph for any padding: mask, no trim
            mask = padding_mask(attention_mask)
        elif attention_mask is not None and not bool(attention_mask.all()):  # no padding: SDPA's unmasked kernels
            keep = int(attention_mask.any(dim=0).nonzero().max()) + 1 if attention_mask.any() else 1
            # the columns after the last real token of every row are padding only: skip them, return zeros there
            input_ids, attention_mask = input_ids[:, :keep], attention_mask[:, :keep]
            token_type_ids = token_type_ids[:, :keep] if token_type_ids is not None else None
            mask = padding_mask(attention_mask)  # (B, 1, 1, T')
        x = self.embeddings(input_ids, token_type_ids)  # (B, T', C)
        for block in self.blocks:
            if self.activation_checkpointing and self.training:
                x = checkpoint(block, x, mask, use_reentrant=False)  # recompute activations in backward
            else:
                x = block(x, mask)
        return F.pad(x, (0, 0, 0, t - x.shape[1])) if x.shape[1] < t else x  # (B, T, C)

    def forward(self, batch: dict[str, torch.Tensor]) -> Output:
        h = self.encode(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))  # (B, T, C)
        head, loss = self.config.head, None
        if head == "mlm":
            labels = batch.get("labels")
            if labels is not None and self.training:
                # only the labelled positions go through the decoder, as BERT's pretraining code gathers them
                # (`gather_indexes`): about 15% of them; the other positions' logits are left at 0
                scored = labels != -100  # (B, T)
                picked = self.head(h[scored])  # (N, V)
                loss = F.cross_entropy(picked.float(), labels[scored])
                logits = h.new_zeros(*labels.shape, picked.shape[-1])
                logits[scored] = picked.detach()  # (B, T, V)
            else:
                logits = self.head(h)  # (B, T, V)
                if labels is not None:
                    loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
        elif head == "classifier":
            pooled = h[:, 0] if self.config.pooling == "cls" else mean_pool(h, batch.get("attention_mask"), False)
            logits = self.head(pooled)  # (B, C) -> (B, classes)
            target = batch.get("y", batch.get("labels"))
            if target is not None:
                loss = F.cross_entropy(logits.float(), target)
        else:
            logits = h
        return Output(logits=logits, loss=loss)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              token_type_ids: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
        """Sentence embeddings (B, C): the hidden states averaged over the real tokens, then L2-normalized."""
        h = self.encode(input_ids, attention_mask, token_type_ids)  # (B, T, C)
        return mean_pool(h, attention_mask, normalize)

    def example_batch(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Random ids (B, 16) whose last row ends in 5 padding tokens, with the targets the head takes."""
        c = self.config
        ids = torch.randint(0, c.vocab_size, (batch_size, EXAMPLE_LENGTH), generator=generator)
        mask = torch.ones_like(ids)
        mask[-1, -5:] = 0
        batch = {"input_ids": ids * mask, "attention_mask": mask}
        if c.head == "mlm":
            labels = torch.full_like(ids, -100)
            labels[:, 1:4] = torch.randint(0, c.vocab_size, (batch_size, 3), generator=generator)
            batch["labels"] = labels
        elif c.head == "classifier":
            batch["y"] = torch.randint(0, c.num_classes, (batch_size,), generator=generator)
        return batch


def mean_pool(h: torch.Tensor, attention_mask: torch.Tensor | None, normalize: bool = True) -> torch.Tensor:
    """Mean of h (B, T, C) over the positions where attention_mask (B, T) is 1 -> (B, C); L2-normalized if asked
    (sentence-transformers' Pooling(mean) and Normalize)."""
    if attention_mask is None:
        pooled = h.mean(dim=1)
    else:
        m = attention_mask.to(h.dtype)[:, :, None]  # (B, T, 1)
        pooled = (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    return F.normalize(pooled, p=2, dim=1) if normalize else pooled


def _init_weights(module: nn.Module) -> None:
    """BERT's initialization: N(0, 0.02) weights, zero biases, LayerNorm at the identity."""
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, std=INIT_STD)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# --- presets -----------------------------------------------------------------------------------------------------

MINILM_L6 = {"vocab_size": 30522, "dim": 384, "n_layers": 6, "n_heads": 12, "ffn_hidden": 1536, "context": 512}


@register_model(BertConfig)
def bert_mlm(**overrides) -> Bert:
    """BERT with the masked-language-model head (a small one by default: 4 layers, 192 wide)."""
    return Bert(BertConfig(**{"head": "mlm", **overrides}))


@register_model(BertConfig)
def bert_classifier(**overrides) -> Bert:
    """BERT with a sequence-classification head on the pooled [CLS] state."""
    return Bert(BertConfig(**{"head": "classifier", **overrides}))


@register_model(BertConfig)
def minilm_l6(**overrides) -> Bert:
    """BERT of all-MiniLM-L6-v2's shape (6 layers, 384 wide, 12 heads, 30522 WordPiece vocabulary), a classifier."""
    return Bert(BertConfig(**{**MINILM_L6, "head": "classifier", **overrides}))
