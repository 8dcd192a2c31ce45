"""U-Net (Ronneberger, Fischer, Brox 2015, "U-Net: convolutional networks for biomedical image segmentation").

    images (B, C, H, W) -> padded at the bottom and right (replicating the border) to multiples of 2**depth
      encoder: stage1 (B, c, H, W) -> stage2 (B, 2c, H/2, W/2) -> ... -> stage{depth+1} (B, 2**depth c, H/2**depth, ..)
      decoder (`head`): from the deepest map up, level by level: upsample x2 to the level's channels, concatenate the
        encoder's map of that level (the skip connection), two 3x3 conv-BN-ReLU -> ... (B, c, H, W)
      -> 1x1 conv (B, num_classes, H, W) -> cropped to the input's H x W: a logit per class and pixel

Encoders: `unet`, the paper's (two 3x3 conv-BN-ReLU per level, a 2x2 max pool between levels, channels doubling
from `base_channels`), or `resnet`, dlforge's ResNet (`dlforge.models.resnet`): the CIFAR stem and depth + 1
residual stages of `layers` blocks, stride 2 at the first block of each stage after the first, so a level's map is a
stage's output. Its modules are named as the ResNet's (`stem`, `stage1`, ...), so `train.transfer` loads a dlforge
classification run's ResNet backbone into it (the same `block`, `layers`, base_channels = its width, CIFAR stem);
the decoder is the `head`, which starts new, at `train.lr` while the backbone trains at `backbone_lr`.

Upsampling: `transposed`, a 2x2 stride-2 transposed conv (the paper's up-convolution, halving the channels), or
`bilinear`, a 1x1 conv to the level's channels then bilinear x2 (the order of the two does not change the result,
both being linear, and the conv is 4x cheaper before). Convs are padded ("same") with batch norm, as modern U-Nets
are, so the output keeps the input's size instead of the paper's valid convolutions and tiling; sides that are not
multiples of 2**depth are padded, and the logits cropped back. The paper's dropout at the end of the contracting
path is `dropout`. Losses (`dlforge.layers.dice`): cross_entropy, dice, ce_dice (their sum), -100 pixels ignored.
With the paper's shape (depth 4, base_channels 64, 1 channel in, 2 classes, transposed) the model has 31,036,546
parameters (the paper's 23 convolutions, with batch norm in place of the conv biases).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass
from torch import nn

from dlforge.errors import ConfigError
from dlforge.layers.conv import ConvBNAct, he_init
from dlforge.layers.dice import IGNORE_INDEX, SegmentationLoss
from dlforge.models.output import Output
from dlforge.models.resnet import BLOCKS, ResNet, residual_stages, zero_init_residuals
from dlforge.registry import register_model


class DoubleConv(nn.Sequential):
    """Two 3x3 conv-BN-ReLU: (B, cin, H, W) -> (B, cout, H, W). Children: conv1, conv2."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = ConvBNAct(cin, cout, 3)
        self.conv2 = ConvBNAct(cout, cout, 3)


class Down(nn.Sequential):
    """A 2x2 max pool, then DoubleConv: (B, cin, H, W) -> (B, cout, H/2, W/2)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.convs = DoubleConv(cin, cout)


def upsampler(cin: int, cout: int, mode: str) -> nn.Module:
    """x2 upsampling to `cout` channels: (B, cin, h, w) -> (B, cout, 2h, 2w)."""
    if mode == "transposed":
        return nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)
    return nn.Sequential(nn.Conv2d(cin, cout, 1), nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))


class UpBlock(nn.Module):
    """Upsample the deeper map to the skip's channels, concatenate the skip, DoubleConv:
    (B, cin, h, w), skip (B, cskip, 2h, 2w) -> (B, cskip, 2h, 2w)."""

    def __init__(self, cin: int, cskip: int, mode: str):
        super().__init__()
        self.up = upsampler(cin, cskip, mode)
        self.convs = DoubleConv(2 * cskip, cskip)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([skip, self.up(x)], dim=1))


class Decoder(nn.Module):
    """The expanding path and the classifier: the encoder's maps, shallow to deep (channels `widths`), -> logits
    (B, num_classes, H, W) at the first map's size."""

    def __init__(self, widths: list[int], num_classes: int, upsample: str, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout2d(dropout)
        # ups[i] brings level i + 1 up to level i, deepest first in forward
        self.ups = nn.ModuleList(UpBlock(widths[i + 1], widths[i], upsample) for i in range(len(widths) - 1))
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        x = self.dropout(maps[-1])
        for level in reversed(range(len(self.ups))):
            x = self.ups[level](x, maps[level])
        return self.classifier(x)


@dataclass(config=ConfigDict(extra="forbid"))
class UNetConfig:
    in_channels: int = Field(1, ge=1, description="image channels; set from the data")
    num_classes: int = Field(11, ge=2, description="semantic classes, background included; set from the data")
    image_size: int | list[int] = Field(32, description="image side or [height, width]; set from the data (any size "
                                                        "runs: sides are padded to multiples of 2**depth)")
    encoder: Literal["unet", "resnet"] = Field("unet", description="unet: the paper's conv blocks; resnet: dlforge's "
                                               "ResNet stages (train.transfer loads a ResNet run's backbone)")
    depth: int = Field(4, ge=1, le=6, description="downsamplings: the deepest map is 2**depth times smaller")
    base_channels: int = Field(32, ge=1, description="channels of the first level, doubling at each level below "
                                                     "(a ResNet's width)")
    upsample: Literal["transposed", "bilinear"] = Field("transposed", description="transposed: 2x2 stride-2 "
                                                        "transposed conv; bilinear: 1x1 conv, then bilinear x2")
    block: Literal["basic", "bottleneck"] = Field("basic", description="residual block (encoder resnet)")
    layers: list[int] | None = Field(None, description="residual blocks per stage, depth + 1 stages (encoder resnet; "
                                                       "default 2 each)")
    dropout: float = Field(0.0, ge=0, lt=1, description="channel dropout on the deepest map (the paper's)")
    loss: Literal["cross_entropy", "dice", "ce_dice"] = Field("cross_entropy", description="per-pixel cross-entropy, "
                                                              "soft Dice over the classes present, or their sum")

    @model_validator(mode="after")
    def _check(self) -> UNetConfig:
        if self.layers is not None:
            if self.encoder != "resnet":
                raise ConfigError("model.layers: residual blocks per stage are for encoder: resnet")
            if len(self.layers) != self.depth + 1 or min(self.layers) < 1:
                raise ConfigError(f"model.layers: expected depth + 1 = {self.depth + 1} stages of >= 1 blocks, got "
                                  f"{self.layers}")
        sides = [self.image_size] if isinstance(self.image_size, int) else self.image_size
        if len(sides) not in (1, 2) or min(sides) < 1:
            raise ConfigError(f"model.image_size: expected a side or [height, width], got {self.image_size}")
        return self

    def size(self) -> tuple[int, int]:
        sides = [self.image_size] if isinstance(self.image_size, int) else self.image_size
        return sides[0], sides[-1]


class UNet(nn.Module):
    """Encoder stages (`stem` and `stage1`.. for a ResNet encoder), then `head`: the decoder and the 1x1 classifier.
    (B, C, H, W) -> logits (B, num_classes, H, W)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = c = config
        levels = c.depth + 1
        if c.encoder == "resnet":  # the CIFAR stem (B, C, H, W) -> (B, c, H, W), then the residual stages
            block = BLOCKS[c.block]
            self.stem = ConvBNAct(c.in_channels, c.base_channels, 3)
            widths = [c.base_channels * 2**i for i in range(levels)]
            stages = residual_stages(block, c.base_channels, widths, c.layers or [2] * levels)
            widths = [w * block.expansion for w in widths]
            self.backbone_type: type = ResNet  # train.transfer takes a ResNet run's stem and stages
        else:
            widths = [c.base_channels * 2**i for i in range(levels)]
            stages = [DoubleConv(c.in_channels, widths[0])]
            stages += [Down(widths[i - 1], widths[i]) for i in range(1, levels)]
            self.backbone_type = UNet  # another U-Net run's encoder
        self.encoder_names = tuple(f"stage{i + 1}" for i in range(levels))
        for name, stage in zip(self.encoder_names, stages, strict=True):
            self.add_module(name, stage)
        self.stage_names = (*(("stem",) if c.encoder == "resnet" else ()), *self.encoder_names, "head")
        self.head = Decoder(widths, c.num_classes, c.upsample, c.dropout)
        self.loss_fn = SegmentationLoss(c.loss)
        he_init(self)
        zero_init_residuals(self)  # a residual encoder starts shallow, as a ResNet does

    def forward(self, batch: dict[str, torch.Tensor]) -> Output:
        logits = self.segment(batch["x"])  # (B, num_classes, H, W)
        loss = self.loss_fn(logits, batch["y"]) if "y" in batch else None
        return Output(logits=logits, loss=loss)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) of any size -> logits (B, num_classes, H, W)."""
        h, w = x.shape[-2:]
        m = 2**self.config.depth
        if h % m or w % m:
            x = F.pad(x, (0, -w % m, 0, -h % m), mode="replicate")  # (B, C, H', W'), multiples of m
        return self.head(self.encode(x))[..., :h, :w]

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's map at every level, shallow to deep: depth + 1 tensors, level i at 1/2**i of the size."""
        if self.config.encoder == "resnet":
            x = self.stem(x)
        maps = []
        for name in self.encoder_names:
            x = self.get_submodule(name)(x)
            maps.append(x)
        return maps

    def example_batch(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Random images (B, in_channels, H, W) and class maps (B, H, W), a few pixels ignored (-100)."""
        c = self.config
        h, w = c.size()
        x = torch.randn(batch_size, c.in_channels, h, w, generator=generator)
        y = torch.randint(0, c.num_classes, (batch_size, h, w), generator=generator)
        y[:, 0, :] = IGNORE_INDEX  # a void border row, as VOC marks them
        return {"x": x, "y": y}


# --- presets -----------------------------------------------------------------------------------------------------


@register_model(UNetConfig)
def unet(**overrides) -> UNet:
    """U-Net: 4 downsamplings, 32-512 channels (7.8M parameters; base_channels 64 is the paper's 31M)."""
    return UNet(UNetConfig(**overrides))


@register_model(UNetConfig)
def unet_small(**overrides) -> UNet:
    """A small U-Net for 64x64 canvases on a CPU: 3 downsamplings, 16-128 channels (0.5M parameters)."""
    return UNet(UNetConfig(**{"depth": 3, "base_channels": 16, **overrides}))


@register_model(UNetConfig)
def unet_resnet20(**overrides) -> UNet:
    """A U-Net on ResNet-20's stages (16-32-64 channels, three blocks each): takes a resnet20 run's backbone."""
    return UNet(UNetConfig(**{"encoder": "resnet", "depth": 2, "base_channels": 16, "layers": [3, 3, 3],
                              **overrides}))
