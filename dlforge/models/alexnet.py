"""AlexNet (Krizhevsky, Sutskever, Hinton 2012), scaled for small images.

Five conv layers with ReLU, overlapping 3x3 stride-2 max pools after conv1, conv2 and conv5 (sec. 3.4), and a
classifier of two dropout-regularised fully connected layers (sec. 4.2). The channels are the single-tower
64-192-384-256-256 of torchvision and Krizhevsky's "one weird trick" (2014) rather than the paper's two-GPU split,
and local response normalization is left out (later work found it adds little).

For 224x224 images the paper's first layer is 11x11 at stride 4; for 28-32 pixel images the default is 5x5 at
stride 1, the channels are halved (`width_mult`) and the 4096-wide classifier is 1024 wide, so Fashion-MNIST maps go
28 -> 13 -> 6 -> 2 through the three pools. With kernel_sizes [11, 5, 3, 3, 3], stride 4, width_mult 1, hidden
[4096, 4096] and 224x224 RGB images this is torchvision's AlexNet, 61,100,840 parameters for 1000 classes.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass
from torch import nn

from dlforge.errors import ConfigError
from dlforge.layers import Loss
from dlforge.layers.conv import (
    ConvBNAct,
    Padding,
    PoolKind,
    checked_size,
    classifier_head,
    make_divisible,
    make_pool,
)
from dlforge.models.convnet import ConvClassifier, ImageClassifierConfig
from dlforge.registry import register_model


@dataclass(config=ConfigDict(extra="forbid"))
class AlexNetConfig(ImageClassifierConfig):
    channels: list[int] = Field(default_factory=lambda: [64, 192, 384, 256, 256], min_length=1,
                                description="output channels of the conv layers, before width_mult")
    kernel_sizes: list[int] = Field(default_factory=lambda: [5, 5, 3, 3, 3], description="one per conv layer")
    stride: int = Field(1, ge=1, description="stride of the first conv (the paper's 4 for 224x224)")
    padding: Padding = Field("same", description="'same' or pixels per side, every conv")
    width_mult: float = Field(0.5, gt=0, description="scales the conv channels (rounded to multiples of 8)")
    pool: PoolKind = "max"
    pool_kernel: int = Field(3, ge=1, description="3 with stride 2: the paper's overlapping pooling")
    pool_stride: int = Field(2, ge=1)
    pool_after: list[int] = Field(default_factory=lambda: [1, 2, 5],
                                  description="conv layers (counted from 1) followed by a pool; fewer for 8x8 images")
    hidden: list[int] = Field(default_factory=lambda: [1024, 1024], description="fully connected widths")
    dropout: float = Field(0.5, ge=0, lt=1, description="before each fully connected layer")

    @field_validator("channels", "kernel_sizes", "hidden")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(w < 1 for w in v):
            raise ValueError("every entry must be >= 1")
        return v


class AlexNet(ConvClassifier):
    """Stages conv1..conv5 (conv -> ReLU [-> pool]), head (flatten -> dropout-FC). (B, C, H, W) -> (B, classes)."""

    def __init__(self, config: AlexNetConfig):
        super().__init__()
        self.config = c = config
        n = len(c.channels)
        if len(c.kernel_sizes) != n:
            raise ConfigError(f"model.kernel_sizes: {len(c.kernel_sizes)} kernel sizes for {n} conv layers "
                              f"(model.channels); give one per layer")
        if any(not 1 <= i <= n for i in c.pool_after):
            raise ConfigError(f"model.pool_after: conv layers are numbered 1..{n}, got {c.pool_after}")
        self.stage_names = (*(f"conv{i + 1}" for i in range(n)), "head")

        size, cin = c.image_size, c.in_channels
        for i, (width, k) in enumerate(zip(c.channels, c.kernel_sizes, strict=True)):
            cout = make_divisible(width * c.width_mult)
            stride = c.stride if i == 0 else 1
            size = checked_size(size, k, stride, c.padding, "kernel_sizes", c.image_size)
            layers: list[nn.Module] = [ConvBNAct(cin, cout, k, stride, c.padding, norm=False)]  # conv + bias, ReLU
            if i + 1 in c.pool_after:
                size = checked_size(size, c.pool_kernel, c.pool_stride, 0, "pool_after", c.image_size)
                layers.append(make_pool(c.pool, c.pool_kernel, c.pool_stride))
            self.add_module(f"conv{i + 1}", nn.Sequential(*layers))
            cin = cout
        self.head = classifier_head(cin * size * size, c.num_classes, c.dropout, c.hidden, pool="flatten")
        self.loss_fn = Loss(c.loss, c.label_smoothing, c.class_weights)


# --- presets ---------------------------------------------------------------------------------------------------


@register_model(AlexNetConfig)
def alexnet_small(**overrides) -> AlexNet:
    """AlexNet for small images: five 5x5/3x3 conv-ReLU layers at half width, three max pools, 1024-1024 dropout FC."""
    return AlexNet(AlexNetConfig(**overrides))
