"""GoogLeNet (Szegedy et al. 2014, "Going deeper with convolutions"), with a stem for small images.

An Inception block looks at the same map through four branches side by side and concatenates their channels:
1x1; 1x1 -> 3x3; 1x1 -> 5x5; 3x3 max pool -> 1x1. The 1x1 "reduce" convs shrink the channels before the costly
3x3 and 5x5 convs, which is what lets the network go wide and deep on a budget. `factorize_5x5` replaces the 5x5 by
two 3x3 convs, the same receptive field with fewer weights (Inception-v2/v3, Szegedy et al. 2015).

The block widths are the paper's table 1 (inception 3a-3b, 4a-4e, 5a-5b) times `width_mult`, with a 3x3/2 max pool
between the three groups; `blocks` says how many of each group's blocks to keep (the paper's full net is [2, 5, 2]).
For 28-32 pixel images the paper's 7x7/2 stem with two pools (a 224 image shrinks 8x before inception 3a) becomes two
3x3 convs at stride 1, so Fashion-MNIST maps go 28 -> 14 -> 7. Every conv has BatchNorm (as torchvision's does), and
the two auxiliary classifiers of the paper are left out. The head is the paper's: average pool, 40% dropout, Linear.
"""

from __future__ import annotations

import torch
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass
from torch import nn

from dlforge.errors import ConfigError
from dlforge.layers import Loss
from dlforge.layers.conv import ConvBNAct, classifier_head, he_init, make_divisible
from dlforge.models.convnet import ConvClassifier, ImageClassifierConfig
from dlforge.registry import register_model

# Table 1: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj) of inception 3a-3b, 4a-4e and 5a-5b
INCEPTION_TABLE = [
    [(64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64)],
    [(192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
     (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128)],
    [(256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)],
]


class Inception(nn.Module):
    """Four branches concatenated: (B, cin, H, W) -> (B, c1 + c3 + c5 + pool_proj, H, W)."""

    def __init__(self, cin: int, c1: int, c3_reduce: int, c3: int, c5_reduce: int, c5: int, pool_proj: int,
                 factorize_5x5: bool = False):
        super().__init__()
        self.branch1 = ConvBNAct(cin, c1, 1)
        self.branch3 = nn.Sequential(ConvBNAct(cin, c3_reduce, 1), ConvBNAct(c3_reduce, c3, 3))
        if factorize_5x5:  # two 3x3 convs see a 5x5 window
            self.branch5 = nn.Sequential(ConvBNAct(cin, c5_reduce, 1), ConvBNAct(c5_reduce, c5, 3),
                                         ConvBNAct(c5, c5, 3))
        else:
            self.branch5 = nn.Sequential(ConvBNAct(cin, c5_reduce, 1), ConvBNAct(c5_reduce, c5, 5))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), ConvBNAct(cin, pool_proj, 1))
        self.out_channels = c1 + c3 + c5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)]
        return torch.cat(branches, dim=1)  # (B, out_channels, H, W)


@dataclass(config=ConfigDict(extra="forbid"))
class GoogLeNetConfig(ImageClassifierConfig):
    blocks: list[int] = Field(default_factory=lambda: [2, 2, 2], min_length=1, max_length=3,
                              description="inception blocks kept from each group 3, 4, 5 (the paper: [2, 5, 2])")
    width_mult: float = Field(0.25, gt=0, description="scales every width of table 1 (rounded to multiples of 8)")
    factorize_5x5: bool = Field(False, description="two 3x3 convs instead of the 5x5 branch")
    dropout: float = Field(0.4, ge=0, lt=1, description="before the Linear head (the paper: 40%)")


class GoogLeNet(ConvClassifier):
    """Stages stem, stage1..stageN (inception groups, a max pool before each but the first), head."""

    def __init__(self, config: GoogLeNetConfig):
        super().__init__()
        self.config = c = config
        for group, (n, table) in enumerate(zip(c.blocks, INCEPTION_TABLE, strict=False)):
            if not 1 <= n <= len(table):
                raise ConfigError(f"model.blocks: group {group + 3} has 1..{len(table)} inception blocks, got {n}")
        self.stage_names = ("stem", *(f"stage{i + 1}" for i in range(len(c.blocks))), "head")

        def width(w: int) -> int:
            return make_divisible(w * c.width_mult)

        stem_out = width(192)  # the paper's stem ends in 192 channels
        self.stem = nn.Sequential(ConvBNAct(c.in_channels, width(64), 3), ConvBNAct(width(64), stem_out, 3))
        cin = stem_out
        for i, (n, table) in enumerate(zip(c.blocks, INCEPTION_TABLE, strict=False)):
            # 3x3/2 max pool with padding 1: ceil(n/2), never below 1 (7 -> 4, 1 -> 1), so any image size fits
            layers: list[nn.Module] = [nn.MaxPool2d(3, stride=2, padding=1)] if i > 0 else []
            for row in table[:n]:
                block = Inception(cin, *(width(w) for w in row), factorize_5x5=c.factorize_5x5)
                layers.append(block)
                cin = block.out_channels
            self.add_module(f"stage{i + 1}", nn.Sequential(*layers))
        self.head = classifier_head(cin, c.num_classes, c.dropout)
        self.loss_fn = Loss(c.loss, c.label_smoothing, c.class_weights)
        he_init(self)


# --- presets ---------------------------------------------------------------------------------------------------


@register_model(GoogLeNetConfig)
def googlenet_small(**overrides) -> GoogLeNet:
    """GoogLeNet for small images: 3x3 stem, inception 3a-3b, 4a-4b, 5a-5b at quarter width, average pool head."""
    return GoogLeNet(GoogLeNetConfig(**overrides))
