"""VGG (Simonyan & Zisserman 2014, "Very deep convolutional networks for large-scale image recognition").

Stages of 3x3 "same" convs (two 3x3 see as far as one 5x5 with fewer weights, sec. 2.3), a 2x2 max pool between
stages halving the map while the channels double, then a classifier of two dropout-regularised fully connected
layers. `stages` lists each stage's conv widths: VGG-11 (configuration A) is [[64], [128], [256, 256], [512, 512],
[512, 512]], VGG-16 (D) has 2-2-3-3-3 convs. BatchNorm after each conv (Ioffe & Szegedy 2015) is on by default.

For 28-32 pixel images the presets divide the channels by 4, use four pools (28 -> 1, 32 -> 2; a fifth would leave
nothing of a 28x28 image) and a 256-wide classifier. With the paper's widths, five pools, hidden [4096, 4096] and
224x224 RGB images VGG-11 has torchvision's 132,863,336 parameters for 1000 classes (VGG-16: 138,357,544).
Dropout acts on the input of every fully connected layer.
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
    he_init,
    make_pool,
)
from dlforge.models.convnet import ConvClassifier, ImageClassifierConfig
from dlforge.registry import register_model

VGG11 = [[64], [128], [256, 256], [512, 512], [512, 512]]  # configuration A
VGG16 = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]  # configuration D


def scaled(stages: list[list[int]], divisor: int) -> list[list[int]]:
    """A VGG layout with every width divided by `divisor`."""
    return [[w // divisor for w in stage] for stage in stages]


@dataclass(config=ConfigDict(extra="forbid"))
class VGGConfig(ImageClassifierConfig):
    stages: list[list[int]] = Field(default_factory=lambda: scaled(VGG11, 4), min_length=1,
                                    description="conv widths of each stage, e.g. [[64], [128], [256, 256]]")
    kernel_size: int = Field(3, ge=1)
    padding: Padding = Field("same", description="'same' or pixels per side")
    batchnorm: bool = True
    pool: PoolKind = Field("max", description="2x2 pool between stages: max (the paper) or avg")
    pools: int | None = Field(None, ge=0, description="how many stages, from the first, end in a pool; default all")
    hidden: list[int] = Field(default_factory=lambda: [256, 256], description="fully connected widths (paper: 4096)")
    dropout: float = Field(0.5, ge=0, lt=1, description="before each fully connected layer")

    @field_validator("stages")
    @classmethod
    def _stages(cls, v: list[list[int]]) -> list[list[int]]:
        if any(not stage or any(w < 1 for w in stage) for stage in v):
            raise ValueError("every stage needs at least one conv, every width >= 1")
        return v

    @field_validator("hidden")
    @classmethod
    def _hidden(cls, v: list[int]) -> list[int]:
        if any(w < 1 for w in v):
            raise ValueError("every width must be >= 1")
        return v


class VGG(ConvClassifier):
    """Stages stage1..stageN (3x3 convs [-> pool]), head (flatten -> dropout-FC). (B, C, H, W) -> (B, classes)."""

    def __init__(self, config: VGGConfig):
        super().__init__()
        self.config = c = config
        n_pools = len(c.stages) if c.pools is None else c.pools
        if n_pools > len(c.stages):
            raise ConfigError(f"model.pools: {n_pools} pools but only {len(c.stages)} stages (model.stages)")
        self.stage_names = (*(f"stage{i + 1}" for i in range(len(c.stages))), "head")

        size, cin = c.image_size, c.in_channels
        for i, widths in enumerate(c.stages):
            layers: list[nn.Module] = []
            for cout in widths:
                size = checked_size(size, c.kernel_size, 1, c.padding, "kernel_size", c.image_size)
                layers.append(ConvBNAct(cin, cout, c.kernel_size, 1, c.padding, norm=c.batchnorm))
                cin = cout
            if i < n_pools:
                size = checked_size(size, 2, 2, 0, "pools", c.image_size)  # (B, cin, size, size)
                layers.append(make_pool(c.pool, 2))
            self.add_module(f"stage{i + 1}", nn.Sequential(*layers))
        self.head = classifier_head(cin * size * size, c.num_classes, c.dropout, c.hidden, pool="flatten")
        self.loss_fn = Loss(c.loss, c.label_smoothing, c.class_weights)
        he_init(self)


# --- presets ---------------------------------------------------------------------------------------------------


@register_model(VGGConfig)
def vgg11_small(**overrides) -> VGG:
    """VGG-11 (configuration A) at a quarter of the width, BatchNorm, four max pools for 28-32 pixel images."""
    return VGG(VGGConfig(**{"stages": scaled(VGG11, 4), "pools": 4, **overrides}))


@register_model(VGGConfig)
def vgg16_small(**overrides) -> VGG:
    """VGG-16 (configuration D) at a quarter of the width, BatchNorm, four max pools for 28-32 pixel images."""
    return VGG(VGGConfig(**{"stages": scaled(VGG16, 4), "pools": 4, **overrides}))
