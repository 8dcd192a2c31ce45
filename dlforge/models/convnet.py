"""The shape every image classifier of the zoo has (the CNNs, ViT): named stages run in order, a `head` last, one
loss; and the config fields they all have (`ImageClassifierConfig`).

Transfer learning relies on it (`dlforge.train.transfer`): `stage_names` lists the stages in forward order, top-level
children (`stem`, `stage1`) or dotted paths to them (a Transformer's `blocks.0`), the last being `head`, which starts
with its pooling and ends in the only `nn.Linear(F, num_classes)`; everything before it is the backbone.
"""

from __future__ import annotations

import torch
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass
from torch import nn

from dlforge.layers.conv import ClassificationLoss
from dlforge.models.output import Output


@dataclass(config=ConfigDict(extra="forbid"))
class ImageClassifierConfig:
    """The fields every image classifier's config has: the image and class shapes the data sets, and the loss.

    Each model's config subclasses it with its own fields (`dropout` among them: where it applies and its default
    differ from one architecture to the next)."""

    in_channels: int = Field(1, ge=1, description="image channels; set from the data")
    num_classes: int = Field(10, ge=2, description="set from the data")
    image_size: int = Field(28, ge=1, description="image side in pixels; set from the data")
    loss: ClassificationLoss = "cross_entropy"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    class_weights: list[float] | None = Field(None, description="per-class loss weights; set by data.class_weights")


class ConvClassifier(nn.Module):
    """Base of the image classifiers: the stages named in `stage_names` run in order; `head` is last, ends in a Linear.

    Subclasses set `self.config` (an `ImageClassifierConfig`) and `self.stage_names` in __init__, then add the
    children in that order and a `loss_fn`; `forward` runs them and computes the loss.
    """

    config: ImageClassifierConfig
    stage_names: tuple[str, ...]

    def forward(self, batch: dict[str, torch.Tensor]) -> Output:
        logits = self.classify(batch["x"])  # (B, num_classes)
        loss = self.loss_fn(logits, batch["y"]) if "y" in batch else None
        return Output(logits=logits, loss=loss)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> logits (B, num_classes): every stage, in order."""
        for name in self.stage_names:  # looked up by name, so a swapped-in head is the one that runs
            x = self.get_submodule(name)(x)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (B, F): every stage before `head`, then the head's pool/flatten."""
        for name in self.stage_names[:-1]:
            x = self.get_submodule(name)(x)
        return self.head[0](x)

    def example_batch(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """A random batch of the shapes this model reads: x (B, in_channels, image_size, image_size), y (B,)."""
        c = self.config
        x = torch.randn(batch_size, c.in_channels, c.image_size, c.image_size, generator=generator)
        y = torch.randint(0, c.num_classes, (batch_size,), generator=generator)
        return {"x": x, "y": y}
