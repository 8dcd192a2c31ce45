"""The Vision Transformer (Dosovitskiy et al. 2020, "An image is worth 16x16 words"), as timm's VisionTransformer.

    images (B, C, H, W) -> p x p patches, each a linear projection (a conv of kernel and stride p) (B, N, C)
        -> [a class token prepended] + positions (B, T, C), T = N or 1 + N -> dropout
        -> n_layers pre-norm blocks of self-attention and an MLP (GELU) (B, T, C)
        -> final LayerNorm -> pool: the class token's state (`cls`) or the mean of the tokens (`mean`) (B, C)
        -> dropout -> Linear (B, num_classes)

Positions are a learned table (ViT) or fixed 2-D sin-cos waves (MAE, He et al. 2021); the class token's own position
is learned, or zero for sin-cos. The table covers the grid of `image_size`; an image of another size (its sides
multiples of the patch) gets the table resampled to its grid, bicubic, the class token's position kept apart (timm's
resample_abs_pos_embed): a model trained at 28x28 runs at 32x32. Mean pooling has no class token; the norm comes
before the pool either way (big_vision's "gap" ViT; timm normalizes after the mean).

Stochastic depth (`drop_path`, DeiT) grows linearly over the blocks from 0 to the rate given; initialization is
timm's (Linear weights truncated normal, std 0.02; positions std 0.02; class token std 1e-6). The stages are named
for transfer learning (`embed`, `blocks.0` ... `blocks.{n-1}`, `norm`, `head`), so `train.transfer.layer_decay`
decays per block as BEiT and MAE fine-tune. With patch 16, 224x224 RGB and 1000 classes, the ViT-Ti/S/B shapes have
timm's 5,717,416 / 22,050,664 / 86,567,656 parameters.

`model.attention_maps(images)` returns every block's attention probabilities, computed beside the normal forward
(which keeps SDPA's fused kernels); `dlforge.eval.attention` turns them into an overlay PNG.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import ConfigDict, Field, ValidationInfo, field_validator
from pydantic.dataclasses import dataclass
from torch import nn

from dlforge.layers import Loss
from dlforge.layers.embeddings import PatchEmbedding, resample_positions, sinusoidal_table_2d
from dlforge.layers.transformer import TransformerBlock
from dlforge.models.convnet import ConvClassifier, ImageClassifierConfig
from dlforge.registry import register_model

NORM_EPS = 1e-6  # timm's ViT LayerNorms
INIT_STD = 0.02


class TokenPool(nn.Module):
    """(B, T, C) -> (B, C): the first token's state (`cls`, the class token) or the mean over the tokens (`mean`)."""

    def __init__(self, pool: str):
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0] if self.pool == "cls" else x.mean(dim=1)

    def extra_repr(self) -> str:
        return f"pool={self.pool!r}"


@dataclass(config=ConfigDict(extra="forbid"))
class ViTConfig(ImageClassifierConfig):
    patch_size: int = Field(4, ge=1, description="side of the square patches; must divide image_size")
    dim: int = Field(128, ge=1, description="width of the tokens (timm's embed_dim)")
    n_layers: int = Field(6, ge=1, description="encoder blocks (timm's depth)")
    n_heads: int = Field(4, ge=1, description="attention heads per block; dim / n_heads channels each")
    ffn_hidden: int | None = Field(None, ge=1, description="MLP width; default 4 * dim (timm's mlp_ratio 4)")
    pool: Literal["cls", "mean"] = Field("cls", description="cls: a class token's state (ViT); mean: the mean of "
                                                            "the patch tokens, no class token")
    positions: Literal["learned", "sinusoidal"] = Field("learned", description="a learned table (ViT) or fixed "
                                                                               "2-D sin-cos (MAE)")
    dropout: float = Field(0.0, ge=0, lt=1, description="on the embeddings, attention weights, sublayer outputs "
                                                        "and before the head")
    drop_path: float = Field(0.0, ge=0, lt=1, description="stochastic depth of the last block, 0 at the first, "
                                                          "linear in between (DeiT: 0.1)")

    @field_validator("patch_size")
    @classmethod
    def _patch_divides_image(cls, v: int, info: ValidationInfo) -> int:
        size = info.data.get("image_size")
        if size is not None and size % v:
            fits = [p for p in range(2, min(size, 16) + 1) if size % p == 0]
            raise ValueError(f"{v} does not divide model.image_size {size}; patch sizes that do: "
                             f"{', '.join(map(str, fits)) or size}")
        return v

    @field_validator("n_heads")
    @classmethod
    def _heads_divide_dim(cls, v: int, info: ValidationInfo) -> int:
        dim = info.data.get("dim")
        if dim is not None and dim % v:
            raise ValueError(f"must divide dim ({dim})")
        return v

    @field_validator("positions")
    @classmethod
    def _sinusoidal_even(cls, v: str, info: ValidationInfo) -> str:
        dim = info.data.get("dim")
        if v == "sinusoidal" and dim is not None and dim % 2:
            raise ValueError(f"2-D sin-cos positions need an even dim, got {dim}")
        return v

    @property
    def hidden(self) -> int:
        return self.ffn_hidden if self.ffn_hidden is not None else 4 * self.dim


class ViTEmbedding(nn.Module):
    """Images -> tokens: patches projected, the class token prepended, positions added (resampled to the image's
    grid), dropout. (B, C, H, W) -> (B, T, dim), T = prefix + H/p * W/p."""

    def __init__(self, c: ViTConfig):
        super().__init__()
        self.prefix = 1 if c.pool == "cls" else 0  # timm's num_prefix_tokens
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim)) if self.prefix else None
        self.patch_embed = PatchEmbedding(c.in_channels, c.dim, c.patch_size)
        self.grid = self.patch_embed.grid(c.image_size, c.image_size)  # the grid the position table covers
        n = self.prefix + self.grid[0] * self.grid[1]
        if c.positions == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, n, c.dim))
        else:  # fixed: the class token's position is zero (MAE)
            table = torch.cat([torch.zeros(self.prefix, c.dim), sinusoidal_table_2d(*self.grid, c.dim)])
            self.register_buffer("pos_embed", table[None], persistent=False)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images)  # (B, N, C)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + N, C)
        grid = self.patch_embed.grid(*images.shape[-2:])
        return self.drop(x + resample_positions(self.pos_embed, self.grid, grid, self.prefix))


class ViT(ConvClassifier):
    """Stages embed, blocks.0 .. blocks.{n-1}, norm, head (pool -> dropout -> Linear). (B, C, H, W) -> (B, classes)."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = c = config
        self.stage_names = ("embed", *(f"blocks.{i}" for i in range(c.n_layers)), "norm", "head")
        self.embed = ViTEmbedding(c)
        rates = [c.drop_path * i / max(c.n_layers - 1, 1) for i in range(c.n_layers)]  # timm: linspace(0, rate)
        self.blocks = nn.ModuleList(
            TransformerBlock(c.dim, c.n_heads, c.hidden, act="gelu", norm_eps=NORM_EPS, norm_first=True,
                             dropout=c.dropout, attn_dropout=c.dropout, drop_path=rate)
            for rate in rates)
        self.norm = nn.LayerNorm(c.dim, eps=NORM_EPS)
        self.head = nn.Sequential(TokenPool(c.pool), nn.Dropout(c.dropout), nn.Linear(c.dim, c.num_classes))
        self.loss_fn = Loss(c.loss, c.label_smoothing, c.class_weights)
        self.apply(_init_weights)
        if c.positions == "learned":
            nn.init.trunc_normal_(self.embed.pos_embed, std=INIT_STD)
        if self.embed.cls_token is not None:
            nn.init.normal_(self.embed.cls_token, std=1e-6)

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: 1 (the class token) or 0 (mean pooling), as timm names it."""
        return self.embed.prefix

    def attention_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Every block's attention probabilities for images (B, C, H, W): n_layers tensors (B, n_heads, T, T), rows
        the queries, the class token first. A side path: `forward` keeps SDPA's fused kernels and never forms them."""
        x = self.embed(images)
        maps = []
        for block in self.blocks:
            maps.append(block.attention_weights(x))
            x = block(x)
        return maps


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):  # timm's init_weights_vit_timm; the patch conv keeps torch's default
        nn.init.trunc_normal_(module.weight, std=INIT_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


# --- presets -----------------------------------------------------------------------------------------------------


@register_model(ViTConfig)
def vit(**overrides) -> ViT:
    """ViT for 28-32 pixel images: patch 4, 6 blocks of 4 heads, 128 wide (1.2M parameters at 28x28)."""
    return ViT(ViTConfig(**overrides))


@register_model(ViTConfig)
def vit_tiny(**overrides) -> ViT:
    """ViT-Ti/16 (DeiT-Ti; timm's vit_tiny_patch16_224): 12 blocks of 3 heads, 192 wide, 224x224 images."""
    shape = {"patch_size": 16, "image_size": 224, "dim": 192, "n_layers": 12, "n_heads": 3}
    return ViT(ViTConfig(**{**shape, **overrides}))
