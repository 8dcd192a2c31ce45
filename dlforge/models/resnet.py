"""ResNet (He, Zhang, Ren, Sun 2015, "Deep residual learning for image recognition").

A residual block learns a correction F(x) to its input and outputs relu(F(x) + shortcut(x)); the shortcut is the
identity when the shapes match and a projection (1x1 conv with the block's stride, then BN: the paper's option B)
when the block changes the channels or the resolution. BasicBlock: 3x3 -> 3x3 (ResNet-18/34). Bottleneck: 1x1 reduce
-> 3x3 -> 1x1 expand to 4x the width (ResNet-50), with the stride on the 3x3 as torchvision does ("ResNet v1.5").

`zero_init_residual` sets the last BN's gamma of every residual branch to 0 (Goyal et al. 2017), so each block starts
as relu(shortcut(x)), the identity for the non-negative activations between blocks: a deep net starts shallow.

Stems: "imagenet" (7x7 stride 2 conv + 3x3 stride 2 max pool, a 224 image -> 56) and "cifar" (one 3x3 stride 1 conv,
no pool: the default, since 28-32 pixel images have no resolution to spare). Stage i has `layers[i]` blocks of
widths[i] channels (x4 out for Bottleneck), stride 2 at the first block of every stage after the first.
With stem="imagenet", width 64, 3 channels and 1000 classes, resnet18/34/50 have torchvision's 11,689,512 /
21,797,672 / 25,557,032 parameters. resnet20 is the CIFAR net of sec. 4.2 (three stages of three BasicBlocks, 16-32-64
channels) with option-B projections: 272,474 parameters for 3 channels and 10 classes (the paper's option A, zero
padding instead of projections, has 269,722).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass
from torch import nn

from dlforge.errors import ConfigError
from dlforge.layers import Loss
from dlforge.layers.conv import ConvBNAct, classifier_head, he_init
from dlforge.models.convnet import ConvClassifier, ImageClassifierConfig
from dlforge.registry import register_model


def shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    """Identity if the shape is kept, else a 1x1 conv (stride) + BN projection: (B, cin, H, W) -> (B, cout, H', W')."""
    if stride == 1 and cin == cout:
        return nn.Identity()
    return ConvBNAct(cin, cout, 1, stride, act="identity")


class BasicBlock(nn.Module):
    """relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x)): (B, cin, H, W) -> (B, planes, H/stride, W/stride)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = ConvBNAct(cin, planes, 3, stride)
        self.conv2 = ConvBNAct(planes, planes, 3, act="identity")
        self.shortcut = shortcut(cin, planes, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        out += self.shortcut(x)  # in place on the fresh BN output, which BN's backward does not need
        return self.relu(out)

    def last_norm(self) -> nn.BatchNorm2d:
        return self.conv2.bn


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (stride) -> 1x1 expand, plus shortcut: (B, cin, H, W) -> (B, 4*planes, H/stride, W/stride)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = ConvBNAct(cin, planes, 1)
        self.conv2 = ConvBNAct(planes, planes, 3, stride)
        self.conv3 = ConvBNAct(planes, planes * self.expansion, 1, act="identity")
        self.shortcut = shortcut(cin, planes * self.expansion, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(self.conv2(self.conv1(x)))
        out += self.shortcut(x)
        return self.relu(out)

    def last_norm(self) -> nn.BatchNorm2d:
        return self.conv3.bn


BLOCKS: dict[str, type[BasicBlock | Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def residual_stages(block: type[BasicBlock | Bottleneck], cin: int, widths: list[int], layers: list[int]
                    ) -> list[nn.Sequential]:
    """ResNet's stages after the stem: stage i has `layers[i]` blocks of widths[i] (x expansion out), stride 2 at the
    first block of every stage after the first. (B, cin, H, W) -> ... -> (B, widths[-1] * expansion, H/2^(n-1), ..)."""
    stages = []
    for i, (n, planes) in enumerate(zip(layers, widths, strict=True)):
        blocks = []
        for j in range(n):
            blocks.append(block(cin, planes, stride=2 if i > 0 and j == 0 else 1))
            cin = planes * block.expansion
        stages.append(nn.Sequential(*blocks))
    return stages


@dataclass(config=ConfigDict(extra="forbid"))
class ResNetConfig(ImageClassifierConfig):
    block: Literal["basic", "bottleneck"] = "basic"
    layers: list[int] = Field(default_factory=lambda: [2, 2, 2, 2], min_length=1, description="blocks per stage")
    width: int = Field(64, ge=1, description="channels of the first stage; stage i has width * 2**i")
    widths: list[int] | None = Field(None, description="channels of each stage's 3x3 convs, instead of width")
    stem: Literal["cifar", "imagenet"] = Field("cifar", description="cifar: 3x3 conv; imagenet: 7x7/2 conv + pool")
    zero_init_residual: bool = Field(True, description="each residual branch's last BN starts at gamma = 0")
    dropout: float = Field(0.0, ge=0, lt=1, description="before the Linear head")

    @field_validator("layers", "widths")
    @classmethod
    def _positive(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(n < 1 for n in v):
            raise ValueError("every entry must be >= 1")
        return v


class ResNet(ConvClassifier):
    """Stages stem, stage1..stageN, head (average pool -> dropout -> Linear). (B, C, H, W) -> (B, num_classes)."""

    def __init__(self, config: ResNetConfig):
        super().__init__()
        self.config = c = config
        widths = c.widths if c.widths is not None else [c.width * 2**i for i in range(len(c.layers))]
        if len(widths) != len(c.layers):
            raise ConfigError(f"model.widths: {len(widths)} widths for {len(c.layers)} stages (model.layers)")
        self.stage_names = ("stem", *(f"stage{i + 1}" for i in range(len(c.layers))), "head")
        block = BLOCKS[c.block]

        if c.stem == "imagenet":  # (B, C, H, W) -> (B, widths[0], H/4, W/4)
            self.stem = nn.Sequential(ConvBNAct(c.in_channels, widths[0], 7, 2), nn.MaxPool2d(3, 2, padding=1))
        else:  # (B, C, H, W) -> (B, widths[0], H, W)
            self.stem = ConvBNAct(c.in_channels, widths[0], 3)
        for i, stage in enumerate(residual_stages(block, widths[0], widths, c.layers)):
            self.add_module(f"stage{i + 1}", stage)
        self.head = classifier_head(widths[-1] * block.expansion, c.num_classes, c.dropout)
        self.loss_fn = Loss(c.loss, c.label_smoothing, c.class_weights)

        he_init(self)
        if c.zero_init_residual:
            zero_init_residuals(self)


def zero_init_residuals(model: nn.Module) -> None:
    """Set the last BN's gamma of every residual branch in `model` to 0 (see the module docstring)."""
    for m in model.modules():
        if isinstance(m, BasicBlock | Bottleneck):
            nn.init.zeros_(m.last_norm().weight)


# --- presets ---------------------------------------------------------------------------------------------------


@register_model(ResNetConfig)
def resnet18(**overrides) -> ResNet:
    """ResNet-18: BasicBlocks [2, 2, 2, 2], widths 64-512 (set `width` for narrower), CIFAR stem by default."""
    return ResNet(ResNetConfig(**{"block": "basic", "layers": [2, 2, 2, 2], **overrides}))


@register_model(ResNetConfig)
def resnet34(**overrides) -> ResNet:
    """ResNet-34: BasicBlocks [3, 4, 6, 3], widths 64-512 (set `width` for narrower), CIFAR stem by default."""
    return ResNet(ResNetConfig(**{"block": "basic", "layers": [3, 4, 6, 3], **overrides}))


@register_model(ResNetConfig)
def resnet50(**overrides) -> ResNet:
    """ResNet-50: Bottlenecks [3, 4, 6, 3], widths 64-512 (x4 out), CIFAR stem by default."""
    return ResNet(ResNetConfig(**{"block": "bottleneck", "layers": [3, 4, 6, 3], **overrides}))


@register_model(ResNetConfig)
def resnet20(**overrides) -> ResNet:
    """ResNet-20 for CIFAR-size images (He et al. sec. 4.2): three stages of three BasicBlocks, 16-32-64 channels."""
    return ResNet(ResNetConfig(**{"block": "basic", "layers": [3, 3, 3], "width": 16, **overrides}))
