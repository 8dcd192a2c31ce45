"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998, "Gradient-based learning applied to document recognition").

C1: 5x5 conv to 6 maps -> S2: 2x2 subsampling -> C3: 5x5 conv to 16 maps -> S4: 2x2 subsampling -> C5: 120 units
-> F6: 84 units -> output, with tanh squashing. On the paper's 32x32 inputs the maps go 28 -> 14 -> 10 -> 5, and C5
(a 5x5 conv over a 5x5 map) is a Linear over the 16*5*5 = 400 flattened values: 61,706 parameters for 10 classes.
Differences from the paper, as is usual today: C3 connects every map (the paper wired 60 of the 96 pairs), S2/S4 are
plain average (or max) pools without their trainable coefficient and bias, and the output is a Linear layer with a
softmax loss instead of Euclidean RBF units.

MNIST-like 28x28 images are padded by 2 on the first conv, which puts them in the paper's 32x32 frame (the digits
were centred in a 32x32 field), so the layer sizes and the parameter count stay those of LeNet-5.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass
from torch import nn

from dlforge.layers import Loss, make_activation
from dlforge.layers.conv import (
    Activation,
    Padding,
    PoolKind,
    checked_size,
    classifier_head,
    make_pool,
    resolve_padding,
)
from dlforge.models.convnet import ConvClassifier, ImageClassifierConfig
from dlforge.registry import register_model


@dataclass(config=ConfigDict(extra="forbid"))
class LeNetConfig(ImageClassifierConfig):
    channels: list[int] = Field(default_factory=lambda: [6, 16], min_length=1,
                                description="maps of each conv layer (C1, C3); each is followed by a pool")
    hidden: list[int] = Field(default_factory=lambda: [120, 84], description="widths of the fully connected layers")
    kernel_size: int = Field(5, ge=1)
    padding: Padding | None = Field(None, description="every conv's padding; default: 2 on C1 for 28x28 images "
                                                      "(the paper's 32x32 frame), else 0")
    act: Activation = Field("tanh", description="the paper's squashing function; relu trains faster")
    pool: PoolKind = Field("avg", description="2x2 subsampling: avg (the paper) or max")
    dropout: float = Field(0.0, ge=0, lt=1, description="before each fully connected layer")

    @field_validator("channels", "hidden")
    @classmethod
    def _widths(cls, v: list[int]) -> list[int]:
        if any(w < 1 for w in v):
            raise ValueError("every width must be >= 1")
        return v


class LeNet(ConvClassifier):
    """Stages stage1..stageN (conv -> act -> pool), head (flatten -> fully connected). (B, C, H, W) -> (B, classes)."""

    def __init__(self, config: LeNetConfig):
        super().__init__()
        self.config = c = config
        self.stage_names = (*(f"stage{i + 1}" for i in range(len(c.channels))), "head")

        size, cin = c.image_size, c.in_channels
        for i, cout in enumerate(c.channels):
            padding = c.padding
            if padding is None:
                padding = 2 if i == 0 and c.image_size == 28 else 0
            size = checked_size(size, c.kernel_size, 1, padding, "padding", c.image_size)
            size = checked_size(size, 2, 2, 0, "channels", c.image_size)  # one pool per conv layer
            conv = nn.Conv2d(cin, cout, c.kernel_size, padding=resolve_padding(padding, c.kernel_size))
            self.add_module(f"stage{i + 1}", nn.Sequential(conv, make_activation(c.act), make_pool(c.pool, 2)))
            cin = cout
        # C5 is a conv whose kernel covers the whole map: a Linear over the flattened (B, cin*size*size) maps
        self.head = classifier_head(cin * size * size, c.num_classes, c.dropout, c.hidden, c.act, pool="flatten")
        self.loss_fn = Loss(c.loss, c.label_smoothing, c.class_weights)


# --- presets ---------------------------------------------------------------------------------------------------


@register_model(LeNetConfig)
def lenet5(**overrides) -> LeNet:
    """LeNet-5 (LeCun et al. 1998): conv5(6)-pool-conv5(16)-pool-fc120-fc84, tanh and average pooling."""
    return LeNet(LeNetConfig(**overrides))
