"""A simple convolutional network: blocks of conv-BN-ReLU (twice) and a 2x2 pool, then average pool and a Linear.

Each block keeps the map size with "same" 3x3 convs and halves it with the pool, while the channels grow
([32, 64, 128]): 28x28 -> 14 -> 7 -> 3 for Fashion-MNIST. `pools` keeps the pool only on the first blocks, so an
8x8 digit survives a deeper stack (8 -> 4 -> 2 with pools=2). The head averages each map to one number per channel
(global average pooling, Lin et al. 2013), so the classifier does not depend on the image size.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass
from torch import nn

from dlforge.errors import ConfigError
from dlforge.layers import Loss
from dlforge.layers.conv import (
    Activation,
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


@dataclass(config=ConfigDict(extra="forbid"))
class SimpleCNNConfig(ImageClassifierConfig):
    channels: list[int] = Field(default_factory=lambda: [32, 64, 128], min_length=1,
                                description="output channels of each block")
    convs_per_block: int = Field(2, ge=1, description="conv-BN-act layers per block")
    kernel_size: int = Field(3, ge=1)
    padding: Padding = Field("same", description="'same' or pixels per side")
    pool: PoolKind = Field("max", description="2x2 pool after a block: max or avg")
    pools: int | None = Field(None, ge=0, description="how many blocks, from the first, end in a pool; default all")
    act: Activation = "relu"
    batchnorm: bool = True
    dropout: float = Field(0.0, ge=0, lt=1, description="before the linear head")

    @field_validator("channels")
    @classmethod
    def _widths(cls, v: list[int]) -> list[int]:
        if any(w < 1 for w in v):
            raise ValueError("every block width must be >= 1")
        return v


class SimpleCNN(ConvClassifier):
    """Stages block1..blockN, head. (B, C, H, W) -> (B, num_classes)."""

    def __init__(self, config: SimpleCNNConfig):
        super().__init__()
        self.config = c = config
        n_pools = len(c.channels) if c.pools is None else c.pools
        if n_pools > len(c.channels):
            raise ConfigError(f"model.pools: {n_pools} pools but only {len(c.channels)} blocks (model.channels)")
        self.stage_names = (*(f"block{i + 1}" for i in range(len(c.channels))), "head")

        size, cin = c.image_size, c.in_channels
        for i, cout in enumerate(c.channels):
            layers: list[nn.Module] = []
            for j in range(c.convs_per_block):
                size = checked_size(size, c.kernel_size, 1, c.padding, "kernel_size", c.image_size)
                layers.append(ConvBNAct(cin if j == 0 else cout, cout, c.kernel_size, 1, c.padding, act=c.act,
                                        norm=c.batchnorm))
            if i < n_pools:
                layers.append(make_pool(c.pool, 2))
                size = checked_size(size, 2, 2, 0, "pools", c.image_size)  # (B, cout, size, size)
            self.add_module(f"block{i + 1}", nn.Sequential(*layers))
            cin = cout
        self.head = classifier_head(cin, c.num_classes, c.dropout)
        self.loss_fn = Loss(c.loss, c.label_smoothing, c.class_weights)
        he_init(self)


# --- presets ---------------------------------------------------------------------------------------------------


@register_model(SimpleCNNConfig)
def simple_cnn(**overrides) -> SimpleCNN:
    """Simple CNN: blocks of two 3x3 conv-BN-ReLU and a max pool (32-64-128 channels), global average pool, Linear."""
    return SimpleCNN(SimpleCNNConfig(**overrides))
