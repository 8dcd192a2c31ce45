"""Recurrent networks over a sequence of feature vectors: forecasters and sequence classifiers.

The encoder is torch's nn.RNN (Elman), nn.LSTM (Hochreiter & Schmidhuber 1997) or nn.GRU (Cho et al. 2014),
stacked `n_layers` deep with `dropout` between layers, optionally bidirectional. It reads x (B, L, F) and its
summary is the top layer's last hidden state, both directions concatenated when bidirectional (the forward one after
step L, the backward one after reading back to step 1). A linear head maps the summary to:

- the forecaster's direct multi-step forecast (B, H * T): H steps of T target columns, horizon-major (index h*T + j
  is step h of target j), trained with mse / mae / huber against `y` (B, H * T). With `residual`, the head predicts
  the change from the last observed value of each target (x's first T columns are the targets, scaled alike), which
  lets a model trained on one level of a trending series forecast at another;
- the classifier's logits (B, num_classes), trained with cross-entropy against `y` (B,).

`dlforge.models.char_rnn` builds the character language model on the same `make_rnn`.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, ValidationInfo, field_validator
from pydantic.dataclasses import dataclass
from torch import nn

from dlforge.layers import Loss
from dlforge.models.output import Output
from dlforge.registry import register_model

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
EXAMPLE_LENGTH = 12  # time steps of `example_batch`; the models take any length


def make_rnn(cell: str, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool = False,
             dropout: float = 0.0) -> nn.RNNBase:
    """A batch-first nn.RNN / nn.LSTM / nn.GRU; an LSTM's forget-gate bias starts at 1 (Jozefowicz et al. 2015)."""
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; expected one of {', '.join(CELLS)}")
    rnn = CELLS[cell](input_size, hidden_size, num_layers=num_layers, batch_first=True, bidirectional=bidirectional,
                      dropout=dropout if num_layers > 1 else 0.0)  # torch applies it between layers only
    if cell == "lstm":
        with torch.no_grad():
            for name, p in rnn.named_parameters():
                if name.startswith("bias_ih"):  # gates are stacked i, f, g, o
                    p[hidden_size:2 * hidden_size].fill_(1.0)
                elif name.startswith("bias_hh"):
                    p[hidden_size:2 * hidden_size].fill_(0.0)
    return rnn


class SequenceEncoder(nn.Module):
    """x (B, L, F) -> the top layer's final hidden state (B, D), D = dim * (2 if bidirectional else 1)."""

    def __init__(self, cell: str, in_features: int, dim: int, n_layers: int, bidirectional: bool, dropout: float):
        super().__init__()
        self.rnn = make_rnn(cell, in_features, dim, n_layers, bidirectional, dropout)
        self.directions = 2 if bidirectional else 1
        self.out_features = dim * self.directions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, state = self.rnn(x)
        h_n = state[0] if isinstance(state, tuple) else state  # (n_layers * directions, B, dim); LSTM: (h, c)
        top = h_n[-self.directions:]  # the last layer: forward (and backward) direction
        return torch.cat(list(top), dim=-1)  # (B, D)


def _regression_loss(name: str, pred: torch.Tensor, target: torch.Tensor, delta: float) -> torch.Tensor:
    pred, target = pred.float(), target.float()
    if name == "mse":
        return F.mse_loss(pred, target)
    if name == "mae":
        return F.l1_loss(pred, target)
    return F.huber_loss(pred, target, delta=delta)


# --- configs -----------------------------------------------------------------------------------------------------


@dataclass(config=ConfigDict(extra="forbid"))
class RecurrentConfig:
    in_features: int = Field(1, ge=1, description="features per time step; set from the data")
    cell: Literal["rnn", "lstm", "gru"] = Field("lstm", description="rnn (Elman, tanh), lstm or gru")
    dim: int = Field(64, ge=1, description="width of the hidden state (torch's hidden_size)")
    n_layers: int = Field(2, ge=1, description="stacked recurrent layers")
    bidirectional: bool = False
    dropout: float = Field(0.0, ge=0, lt=1, description="between stacked layers and before the head")


@dataclass(config=ConfigDict(extra="forbid"))
class ForecasterConfig(RecurrentConfig):
    horizon: int = Field(1, ge=1, description="steps forecast at once (direct multi-step); set from the data")
    num_targets: int = Field(1, ge=1, description="target columns, the first ones of x; set from the data")
    residual: bool = Field(False, description="forecast the change from each target's last observed value")
    loss: Literal["mse", "mae", "huber"] = "mse"
    huber_delta: float = Field(1.0, gt=0)

    @field_validator("residual")
    @classmethod
    def _targets_in_inputs(cls, v: bool, info: ValidationInfo) -> bool:
        targets, features = info.data.get("num_targets", 1), info.data.get("in_features", 1)
        if v and targets > features:
            raise ValueError(f"needs the {targets} targets among the {features} input features")
        return v


@dataclass(config=ConfigDict(extra="forbid"))
class SequenceClassifierConfig(RecurrentConfig):
    num_classes: int = Field(2, ge=2, description="set from the data")
    loss: Literal["cross_entropy", "perceptron"] = "cross_entropy"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    class_weights: list[float] | None = Field(None, description="per-class loss weights; set by data.class_weights")

    @field_validator("class_weights")
    @classmethod
    def _one_per_class(cls, v: list[float] | None, info: ValidationInfo) -> list[float] | None:
        if v is not None and len(v) != info.data.get("num_classes"):
            raise ValueError(f"expected {info.data.get('num_classes')} weights, one per class")
        return v


# --- models ------------------------------------------------------------------------------------------------------


class RNNForecaster(nn.Module):
    """x (B, L, F) -> forecast (B, H * T) of the next H steps of T targets, horizon-major."""

    def __init__(self, config: ForecasterConfig):
        super().__init__()
        self.config = c = config
        self.encoder = SequenceEncoder(c.cell, c.in_features, c.dim, c.n_layers, c.bidirectional, c.dropout)
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(self.encoder.out_features, c.horizon * c.num_targets)

    def forward(self, batch: dict[str, torch.Tensor]) -> Output:
        c = self.config
        x = batch["x"]  # (B, L, F)
        out = self.head(self.drop(self.encoder(x)))  # (B, H * T)
        if c.residual:
            out = out + x[:, -1, : c.num_targets].repeat(1, c.horizon)  # last value of target j at every h*T + j
        loss = _regression_loss(c.loss, out, batch["y"], c.huber_delta) if "y" in batch else None
        return Output(logits=out, loss=loss)

    def example_batch(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        c = self.config
        out = c.horizon * c.num_targets
        return {"x": torch.randn(batch_size, EXAMPLE_LENGTH, c.in_features, generator=generator),
                "y": torch.randn(batch_size, out, generator=generator),
                "naive": torch.randn(batch_size, out, generator=generator)}


class RNNClassifier(nn.Module):
    """x (B, L, F) -> class logits (B, num_classes)."""

    def __init__(self, config: SequenceClassifierConfig):
        super().__init__()
        self.config = c = config
        self.encoder = SequenceEncoder(c.cell, c.in_features, c.dim, c.n_layers, c.bidirectional, c.dropout)
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(self.encoder.out_features, c.num_classes)
        self.loss_fn = Loss(c.loss, c.label_smoothing, c.class_weights)

    def forward(self, batch: dict[str, torch.Tensor]) -> Output:
        logits = self.head(self.drop(self.encoder(batch["x"])))  # (B, C)
        loss = self.loss_fn(logits, batch["y"]) if "y" in batch else None
        return Output(logits=logits, loss=loss)

    def example_batch(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        c = self.config
        return {"x": torch.randn(batch_size, EXAMPLE_LENGTH, c.in_features, generator=generator),
                "y": torch.randint(0, c.num_classes, (batch_size,), generator=generator)}


# --- presets -----------------------------------------------------------------------------------------------------


@register_model(ForecasterConfig)
def rnn_forecaster(**overrides) -> RNNForecaster:
    """Elman RNN forecaster: last hidden state -> linear to the next H steps."""
    return RNNForecaster(ForecasterConfig(**{"cell": "rnn", **overrides}))


@register_model(ForecasterConfig)
def lstm_forecaster(**overrides) -> RNNForecaster:
    """LSTM forecaster: last hidden state -> linear to the next H steps."""
    return RNNForecaster(ForecasterConfig(**{"cell": "lstm", **overrides}))


@register_model(ForecasterConfig)
def gru_forecaster(**overrides) -> RNNForecaster:
    """GRU forecaster: last hidden state -> linear to the next H steps."""
    return RNNForecaster(ForecasterConfig(**{"cell": "gru", **overrides}))


@register_model(SequenceClassifierConfig)
def rnn_classifier(**overrides) -> RNNClassifier:
    """Elman RNN sequence classifier: last hidden state -> class logits."""
    return RNNClassifier(SequenceClassifierConfig(**{"cell": "rnn", **overrides}))


@register_model(SequenceClassifierConfig)
def lstm_classifier(**overrides) -> RNNClassifier:
    """LSTM sequence classifier: last hidden state -> class logits."""
    return RNNClassifier(SequenceClassifierConfig(**{"cell": "lstm", **overrides}))


@register_model(SequenceClassifierConfig)
def gru_classifier(**overrides) -> RNNClassifier:
    """GRU sequence classifier: last hidden state -> class logits."""
    return RNNClassifier(SequenceClassifierConfig(**{"cell": "gru", **overrides}))
