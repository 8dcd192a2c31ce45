"""Character-level recurrent language model (Karpathy's char-rnn; Graves 2013, "Generating Sequences With RNNs").

input_ids (B, T) -> embedding (B, T, E) -> stacked RNN / LSTM / GRU (B, T, H) -> linear (B, T, V): at every position
the logits of the next character. Trained with cross-entropy against `labels` (B, T), -100 ignored. With
`tie_weights` the output layer shares the embedding matrix (Press & Wolf 2017; needs embed_dim == dim).

Generation runs stepwise: `state = model.init_state(B)`, then `logits, state = model.step(ids, state)` on the prompt
once and on one new token at a time, so the prefix is never recomputed (see `dlforge.llm.generate`).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, ValidationInfo, field_validator
from pydantic.dataclasses import dataclass
from torch import nn

from dlforge.models.output import Output
from dlforge.models.rnn import make_rnn
from dlforge.registry import register_model

EXAMPLE_LENGTH = 16  # tokens per row of `example_batch`

# LSTM: (h, c), each (n_layers, B, dim); RNN and GRU: h (n_layers, B, dim)
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@dataclass(config=ConfigDict(extra="forbid"))
class CharRNNConfig:
    vocab_size: int = Field(65, ge=2, description="set from the data (the tokenizer's vocabulary, <unk> included)")
    cell: Literal["rnn", "lstm", "gru"] = Field("lstm", description="rnn (Elman, tanh), lstm or gru")
    embed_dim: int = Field(64, ge=1)
    dim: int = Field(256, ge=1, description="width of the hidden state (torch's hidden_size)")
    n_layers: int = Field(2, ge=1, description="stacked recurrent layers")
    dropout: float = Field(0.1, ge=0, lt=1, description="on the embeddings, between layers and before the head")
    tie_weights: bool = Field(False, description="share the embedding matrix with the output layer")
    loss: Literal["cross_entropy"] = "cross_entropy"

    @field_validator("tie_weights")
    @classmethod
    def _tie(cls, v: bool, info: ValidationInfo) -> bool:
        embed, dim = info.data.get("embed_dim"), info.data.get("dim")
        if v and embed != dim:
            raise ValueError(f"needs embed_dim == dim, found {embed} and {dim}")
        return v


class CharRNN(nn.Module):
    def __init__(self, config: CharRNNConfig):
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim)
        self.drop = nn.Dropout(c.dropout)
        self.rnn = make_rnn(c.cell, c.embed_dim, c.dim, c.n_layers, dropout=c.dropout)
        self.head = nn.Linear(c.dim, c.vocab_size)
        if c.tie_weights:
            self.head.weight = self.embed.weight  # (V, E) serves both ways

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The zero state before the first token, on `device` (default: the model's)."""
        c = self.config
        device = self.embed.weight.device if device is None else device
        h = torch.zeros(c.n_layers, batch_size, c.dim, device=device)
        return (h, torch.zeros_like(h)) if c.cell == "lstm" else h

    def step(self, input_ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Read input_ids (B, T) after `state` (None: the zero state); return logits (B, T, V) and the new state."""
        e = self.drop(self.embed(input_ids))  # (B, T, E)
        out, state = self.rnn(e, state)  # (B, T, H)
        return self.head(self.drop(out)), state  # (B, T, V)

    def forward(self, batch: dict[str, torch.Tensor]) -> Output:
        logits, _ = self.step(batch["input_ids"])  # (B, T, V)
        loss = None
        if "labels" in batch:
            loss = F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
        return Output(logits=logits, loss=loss)

    def example_batch(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        ids = torch.randint(0, self.config.vocab_size, (batch_size, EXAMPLE_LENGTH + 1), generator=generator)
        labels = ids[:, 1:].clone()
        labels[:, :2] = -100  # a few ignored positions, as padding would be
        return {"input_ids": ids[:, :-1], "labels": labels}


# --- presets -----------------------------------------------------------------------------------------------------


@register_model(CharRNNConfig)
def char_rnn(**overrides) -> CharRNN:
    """Character language model on an Elman RNN."""
    return CharRNN(CharRNNConfig(**{"cell": "rnn", **overrides}))


@register_model(CharRNNConfig)
def char_lstm(**overrides) -> CharRNN:
    """Character language model on an LSTM (char-rnn)."""
    return CharRNN(CharRNNConfig(**{"cell": "lstm", **overrides}))


@register_model(CharRNNConfig)
def char_gru(**overrides) -> CharRNN:
    """Character language model on a GRU."""
    return CharRNN(CharRNNConfig(**{"cell": "gru", **overrides}))
