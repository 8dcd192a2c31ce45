"""Perceptron and multi-layer perceptron, from the neuron up.

A neuron computes an affine map of its inputs followed by an activation; a layer is many neurons side by side
(`nn.Linear`), and an MLP stacks layers: Linear -> norm -> activation -> dropout, repeated, then a linear head. With
no hidden layer the same model is linear regression (mse), logistic regression (cross_entropy / bce) or Rosenblatt's
perceptron (the perceptron criterion).
"""

from __future__ import annotations

import torch
from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass
from torch import nn
from torch.utils.checkpoint import checkpoint

from dlforge.layers import ACTIVATIONS, LOSSES, NORMS, Loss, make_activation, make_norm
from dlforge.models.output import Output
from dlforge.registry import register_model


class Block(nn.Module):
    """One hidden layer: Linear -> norm -> activation -> dropout. (B, d_in) -> (B, d_out)."""

    def __init__(self, d_in: int, d_out: int, act: str, norm: str, dropout: float, bias: bool):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out, bias=bias)
        self.norm = make_norm(norm, d_out)
        self.act = make_activation(act)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.act(self.norm(self.linear(x))))


@dataclass(config=ConfigDict(extra="forbid"))
class MLPConfig:
    in_features: int = Field(4, ge=1, description="set from the data")
    out_features: int = Field(3, ge=1, description="classes, or 1 for regression; set from the data")
    hidden: list[int] = Field(default_factory=lambda: [64, 64], description="widths of the hidden layers")
    act: str = "relu"
    norm: str = "none"
    dropout: float = Field(0.0, ge=0, lt=1)
    bias: bool = True
    loss: str = "cross_entropy"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    class_weights: list[float] | None = Field(None, description="per-class loss weights; set by data.class_weights")
    huber_delta: float = Field(1.0, gt=0)

    @field_validator("hidden")
    @classmethod
    def _widths(cls, v: list[int]) -> list[int]:
        if any(w < 1 for w in v):
            raise ValueError("every hidden width must be >= 1")
        return v

    @field_validator("act")
    @classmethod
    def _act(cls, v: str) -> str:
        return _one_of(v, ACTIVATIONS)

    @field_validator("norm")
    @classmethod
    def _norm(cls, v: str) -> str:
        return _one_of(v, NORMS)

    @field_validator("loss")
    @classmethod
    def _loss(cls, v: str) -> str:
        return _one_of(v, LOSSES)


def _one_of(v: str, names) -> str:
    if v not in names:
        raise ValueError(f"expected one of {', '.join(names)}")
    return v


class MLP(nn.Module):
    supports_activation_checkpointing = True

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        c = config
        widths = [c.in_features, *c.hidden]
        self.blocks = nn.ModuleList(
            Block(a, b, c.act, c.norm, c.dropout, c.bias) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        # bce and the regression losses need one output; cross_entropy and perceptron one per class
        head_out = 1 if c.loss in ("bce", "mse", "mae", "huber") else c.out_features
        self.head = nn.Linear(widths[-1], head_out, bias=c.bias)
        self.loss_fn = Loss(c.loss, c.label_smoothing, c.class_weights, c.huber_delta)
        self.activation_checkpointing = False

    def forward(self, batch: dict) -> Output:
        h = batch["x"].flatten(1)  # (B, in_features); images (B, C, H, W) are read pixel by pixel
        for block in self.blocks:
            if self.activation_checkpointing and self.training:
                h = checkpoint(block, h, use_reentrant=False)  # recompute activations in backward
            else:
                h = block(h)
        logits = self.head(h)  # (B, classes) or (B, 1)
        loss = self.loss_fn(logits, batch["y"]) if "y" in batch else None
        return Output(logits=logits, loss=loss)

    def example_batch(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """A random batch of the shapes this model reads, with targets of the type its loss takes."""
        c = self.config
        x = torch.randn(batch_size, c.in_features, generator=generator)
        if c.loss in ("cross_entropy", "perceptron"):
            y = torch.randint(0, c.out_features, (batch_size,), generator=generator)
        elif c.loss == "bce":
            y = torch.randint(0, 2, (batch_size,), generator=generator)
        else:
            y = torch.randn(batch_size, generator=generator)
        return {"x": x, "y": y}


# --- presets ---------------------------------------------------------------------------------------------------


@register_model(MLPConfig)
def mlp(**overrides) -> MLP:
    """Multi-layer perceptron: configurable depth, width, activation, norm and dropout."""
    return MLP(MLPConfig(**overrides))


@register_model(MLPConfig)
def perceptron(**overrides) -> MLP:
    """Rosenblatt's single-layer perceptron: one linear layer trained with the perceptron criterion."""
    return MLP(MLPConfig(**{"hidden": [], "loss": "perceptron", **overrides}))


@register_model(MLPConfig)
def logistic_regression(**overrides) -> MLP:
    """Logistic (softmax) regression: an MLP with no hidden layer and cross-entropy."""
    return MLP(MLPConfig(**{"hidden": [], "loss": "cross_entropy", **overrides}))


@register_model(MLPConfig)
def linear_regression(**overrides) -> MLP:
    """Linear regression: an MLP with no hidden layer and mean squared error."""
    return MLP(MLPConfig(**{"hidden": [], "loss": "mse", "out_features": 1, **overrides}))
