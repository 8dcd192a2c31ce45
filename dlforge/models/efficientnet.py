"""EfficientNet (Tan & Le 2019, "EfficientNet: rethinking model scaling for convolutional neural networks").

The block is MobileNetV2's inverted residual with squeeze-excitation, "MBConv": a 1x1 conv expands the channels
(x6), a depthwise kxk conv (one filter per channel, groups = channels) mixes space, squeeze-excitation reweights the
channels, a 1x1 conv projects back down with no activation; BN after every conv, SiLU after the first two. When the
block keeps the shape, its input is added back, and stochastic depth (Huang et al. 2016) drops the whole branch of a
sample with a probability growing linearly with depth up to `drop_path`.

The stage table is B0's (table 1). Compound scaling (sec. 3.3) grows depth, width and resolution together: for
phi = 1, depth x alpha = 1.2, width x beta = 1.1, resolution x gamma = 1.15. Widths are rounded to multiples of 8 and
repeats rounded up, as in the reference code; with width 1.0 / depth 1.0, width 1.0 / depth 1.1 and width 1.1 / depth
1.2, 3 channels and 1000 classes the counts are torchvision's B0, B1 and B2 (5,288,548 / 7,794,184 / 9,109,994).

For small images the stem runs at stride 1 instead of B0's 2 (`stem_stride`), so a 28 or 32 pixel image ends at 2x2
after the four stride-2 stages, as a 224 image ends at 7x7 in B0. `efficientnet_small_scaled` is phi = 1 from the
28-pixel base: width 1.1, depth 1.2 and resolution 32 (28 x 1.15 = 32.2). `resolution` is the input size the scaling
chose; the data must deliver images of that size (resize them), and a model whose `image_size` (set from the data)
differs from a given `resolution` is a ConfigError. Leave `resolution` unset to take any size.
"""

from __future__ import annotations

import math

import torch
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass
from torch import nn

from dlforge.errors import ConfigError
from dlforge.layers import Loss
from dlforge.layers.conv import (
    ConvBNAct,
    SqueezeExcite,
    classifier_head,
    he_init,
    make_divisible,
)
from dlforge.layers.droppath import DropPath
from dlforge.models.convnet import ConvClassifier, ImageClassifierConfig
from dlforge.registry import register_model

# EfficientNet-B0, table 1, stages 2-8: (expand ratio, channels, repeats, stride, kernel)
B0_STAGES = [(1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3), (6, 112, 3, 1, 5),
             (6, 192, 4, 2, 5), (6, 320, 1, 1, 3)]
B0_STEM, B0_TOP = 32, 1280  # channels of the 3x3 stem conv and of the final 1x1 conv


class MBConv(nn.Module):
    """Expand 1x1 -> depthwise kxk (stride) -> SE -> project 1x1 [+ x]: (B, cin, H, W) -> (B, cout, H', W')."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int, drop_path: float):
        super().__init__()
        hidden = cin * expand
        self.expand = ConvBNAct(cin, hidden, 1, act="silu") if expand != 1 else nn.Identity()
        self.depthwise = ConvBNAct(hidden, hidden, kernel, stride, groups=hidden, act="silu")
        self.se = SqueezeExcite(hidden, max(1, cin // 4), act="silu")  # squeeze to a quarter of the block input
        self.project = ConvBNAct(hidden, cout, 1, act="identity")
        self.residual = stride == 1 and cin == cout
        self.drop_path = DropPath(drop_path) if self.residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return self.drop_path(out) + x if self.residual else out


@dataclass(config=ConfigDict(extra="forbid"))
class EfficientNetConfig(ImageClassifierConfig):
    width_mult: float = Field(1.0, gt=0, description="compound scaling of the channels (beta**phi)")
    depth_mult: float = Field(1.0, gt=0, description="compound scaling of the repeats (alpha**phi)")
    resolution: int | None = Field(None, ge=1, description="input size the scaling chose (gamma**phi * base); "
                                                           "the data's image_size must match")
    stem_stride: int = Field(1, ge=1, description="1 for 28-32 pixel images; B0 uses 2 on 224")
    dropout: float = Field(0.2, ge=0, lt=1, description="before the Linear head (B0: 0.2)")
    drop_path: float = Field(0.2, ge=0, lt=1, description="stochastic depth rate of the last block")


class EfficientNet(ConvClassifier):
    """Stages stem, stage1..stage7 (MBConv), top (1x1 conv), head (average pool -> dropout -> Linear)."""

    def __init__(self, config: EfficientNetConfig):
        super().__init__()
        self.config = c = config
        if c.resolution is not None and c.image_size != c.resolution:
            raise ConfigError(f"model.image_size: {c.image_size}, but model.resolution is {c.resolution}; resize "
                              f"the images to {c.resolution}x{c.resolution} or unset model.resolution")
        self.resolution = c.resolution or c.image_size
        self.stage_names = ("stem", *(f"stage{i + 1}" for i in range(len(B0_STAGES))), "top", "head")

        def width(w: int) -> int:
            return make_divisible(w * c.width_mult)

        repeats = [math.ceil(r * c.depth_mult) for _, _, r, _, _ in B0_STAGES]
        self.stem = ConvBNAct(c.in_channels, width(B0_STEM), 3, c.stem_stride, act="silu")
        cin, block_id, total = width(B0_STEM), 0, sum(repeats)
        for i, ((expand, channels, _, stride, kernel), n) in enumerate(zip(B0_STAGES, repeats, strict=True)):
            blocks = []
            for j in range(n):
                rate = c.drop_path * block_id / total  # linear in depth: 0 at the first block
                blocks.append(MBConv(cin, width(channels), expand, kernel, stride if j == 0 else 1, rate))
                cin, block_id = width(channels), block_id + 1
            self.add_module(f"stage{i + 1}", nn.Sequential(*blocks))
        self.top = ConvBNAct(cin, width(B0_TOP), 1, act="silu")
        self.head = classifier_head(width(B0_TOP), c.num_classes, c.dropout)
        self.loss_fn = Loss(c.loss, c.label_smoothing, c.class_weights)
        he_init(self)


# --- presets ---------------------------------------------------------------------------------------------------


@register_model(EfficientNetConfig)
def efficientnet_b0_small(**overrides) -> EfficientNet:
    """EfficientNet-B0 for small images: B0's MBConv stages with a stride-1 stem, any image size."""
    return EfficientNet(EfficientNetConfig(**overrides))


@register_model(EfficientNetConfig)
def efficientnet_small_scaled(**overrides) -> EfficientNet:
    """EfficientNet compound-scaled by phi = 1 from the 28-pixel B0: width 1.1, depth 1.2, 32x32 images."""
    return EfficientNet(EfficientNetConfig(**{"width_mult": 1.1, "depth_mult": 1.2, "resolution": 32,
                                              "image_size": 32, **overrides}))
