"""Denoising diffusion (Ho, Jain, Abbeel 2020) with a small U-Net, DDIM sampling (Song, Meng, Ermon 2021) and
classifier-free guidance (Ho & Salimans 2022).

Training: an image x_0 in [0, 1] is scaled to [-1, 1], a timestep t ~ U{0..T-1} and noise eps ~ N(0, I) drawn,
x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (`dlforge.layers.noise_schedule`), and the U-Net learns to
predict eps (or v) from (x_t, t, class): the loss is their mean squared error. A class-conditional model sees the
"no class" label (index num_classes) with probability `cond_drop`, so that one network gives both the conditional and
the unconditional prediction; sampling mixes them, uncond + guidance * (cond - uncond).

The U-Net (the layout of diffusers' UNet2DModel with DownBlock2D / UpBlock2D blocks and a UNetMidBlock2D, and its
module names, so that `diffusers_config()` and the state dict build that model with the same weights):

    x_t (B, C, H, W) -> conv_in (B, c0, H, W)
    t -> sinusoidal (cos | sin, c0) -> time_embedding: Linear -> SiLU -> Linear (B, 4 c0) [+ class_embedding(label)]
    down_blocks[i]: layers_per_block ResBlocks to channels[i] (each output kept as a skip), then a stride-2 conv
      (kept too), except at the last level
    mid_block: ResBlock -> self-attention (GroupNorm, one head per `head_dim` channels, residual) -> ResBlock
    up_blocks[i]: layers_per_block + 1 ResBlocks, each on [hidden, the last skip] concatenated, then nearest x2 and a
      3x3 conv, except at the last level
    -> GroupNorm -> SiLU -> conv_out (B, C, H, W): the predicted eps (or v)

A ResBlock: GroupNorm -> SiLU -> 3x3 conv, + Linear(SiLU(temb)) per channel, GroupNorm -> SiLU -> dropout -> 3x3 conv,
added to the input (through a 1x1 conv when the channels change).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass
from torch import nn

from dlforge.errors import ConfigError
from dlforge.layers.noise_schedule import NoiseSchedule
from dlforge.models.output import GenerativeOutput
from dlforge.registry import register_model


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Timesteps (B,) -> (B, dim): [cos(t f_i), sin(t f_i)] with f_i = max_period^(-i / (dim / 2)), i < dim / 2."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimeEmbedding(nn.Module):
    """(B, c0) sinusoidal features -> (B, 4 c0): Linear -> SiLU -> Linear."""

    def __init__(self, cin: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(cin, dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class ResBlock(nn.Module):
    """(B, cin, H, W), temb (B, T) -> (B, cout, H, W)."""

    def __init__(self, cin: int, cout: int, temb: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class Resample(nn.Module):
    """x2 down (a 3x3 stride-2 conv) or up (nearest x2, then a 3x3 conv), channels kept."""

    def __init__(self, channels: int, up: bool):
        super().__init__()
        self.up = up
        self.conv = nn.Conv2d(channels, channels, 3, stride=1 if up else 2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest") if self.up else x)


class SpatialAttention(nn.Module):
    """Self-attention over the H * W positions, residual: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, head_dim: int, groups: int):
        super().__init__()
        self.heads = channels // head_dim
        self.group_norm = nn.GroupNorm(groups, channels)
        self.to_q, self.to_k, self.to_v = (nn.Linear(channels, channels) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.group_norm(x).view(B, C, H * W).transpose(1, 2)  # (B, HW, C)
        q, k, v = (proj(h).view(B, -1, self.heads, C // self.heads).transpose(1, 2)
                   for proj in (self.to_q, self.to_k, self.to_v))  # (B, heads, HW, head_dim)
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, H * W, C)
        h = self.to_out[1](self.to_out[0](h))
        return x + h.transpose(1, 2).reshape(B, C, H, W)


class DownBlock(nn.Module):
    def __init__(self, cin: int, cout: int, layers: int, temb: int, groups: int, dropout: float, down: bool):
        super().__init__()
        self.resnets = nn.ModuleList(ResBlock(cin if i == 0 else cout, cout, temb, groups, dropout)
                                     for i in range(layers))
        self.downsamplers = nn.ModuleList([Resample(cout, up=False)]) if down else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for resnet in self.resnets:
            x = resnet(x, temb)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UpBlock(nn.Module):
    """layers ResBlocks on [hidden, skip]; `skip_channels` lists each one's skip width, in the order they are used."""

    def __init__(self, cin: int, cout: int, skip_channels: list[int], temb: int, groups: int, dropout: float,
                 up: bool):
        super().__init__()
        self.resnets = nn.ModuleList(ResBlock((cin if i == 0 else cout) + s, cout, temb, groups, dropout)
                                     for i, s in enumerate(skip_channels))
        self.upsamplers = nn.ModuleList([Resample(cout, up=True)]) if up else None

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(torch.cat([x, skips.pop()], dim=1), temb)
        return x if self.upsamplers is None else self.upsamplers[0](x)


class MidBlock(nn.Module):
    def __init__(self, channels: int, temb: int, groups: int, dropout: float, head_dim: int, attention: bool):
        super().__init__()
        self.resnets = nn.ModuleList(ResBlock(channels, channels, temb, groups, dropout) for _ in range(2))
        self.attentions = nn.ModuleList([SpatialAttention(channels, head_dim, groups)] if attention else [])

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x, temb)
        if len(self.attentions):
            x = self.attentions[0](x)
        return self.resnets[1](x, temb)


class Sampling(BaseModel):
    """How the model samples by default (`dlforge sample --steps` overrides the steps)."""

    model_config = ConfigDict(extra="forbid")
    sampler: Literal["ddim", "ddpm"] = Field("ddim", description="ddim: deterministic (eta 0); ddpm: ancestral")
    steps: int = Field(50, ge=1, description="denoising steps (at most schedule.n_steps)")
    spacing: Literal["leading", "trailing", "linspace"] = Field("trailing", description="which timesteps they visit")
    eta: float = Field(0.0, ge=0, description="DDIM's noise (0: deterministic, 1: DDPM's variance)")
    guidance: float = Field(1.0, ge=0, description="classifier-free guidance scale (1: the conditional prediction)")


class Schedule(BaseModel):
    """The forward process."""

    model_config = ConfigDict(extra="forbid")
    n_steps: int = Field(1000, ge=2, description="training timesteps T")
    betas: Literal["linear", "cosine"] = "linear"
    prediction: Literal["epsilon", "v_prediction"] = Field("epsilon", description="what the network predicts")


@dataclass(config=ConfigDict(extra="forbid"))
class DiffusionConfig:
    in_channels: int = Field(1, ge=1, description="image channels; set from the data")
    image_size: int | list[int] = Field(28, description="image side or [height, width]; set from the data")
    num_classes: int = Field(10, ge=1, description="classes of a conditional model; set from the data")
    channels: list[int] = Field(default_factory=lambda: [32, 64, 64], description="U-Net widths per level")
    layers_per_block: int = Field(1, ge=1, description="ResBlocks per level on the way down")
    norm_groups: int = Field(8, ge=1, description="GroupNorm groups (must divide every width)")
    head_dim: int = Field(8, ge=1, description="channels per attention head in the middle block")
    attention: bool = Field(True, description="self-attention in the middle block")
    dropout: float = Field(0.0, ge=0, lt=1)
    conditional: bool = Field(False, description="class-conditional (classifier-free guidance)")
    cond_drop: float = Field(0.1, ge=0, lt=1, description="share of training labels replaced by 'no class'")
    schedule: Schedule = Field(default_factory=Schedule)
    sampling: Sampling = Field(default_factory=Sampling)

    @model_validator(mode="after")
    def _check(self) -> DiffusionConfig:
        if not self.channels or any(c % self.norm_groups for c in self.channels):
            raise ConfigError(f"model.channels: every width must divide into model.norm_groups={self.norm_groups} "
                              f"groups, got {self.channels}")
        if self.attention and self.channels[-1] % self.head_dim:
            raise ConfigError(f"model.head_dim: {self.head_dim} does not divide the middle width {self.channels[-1]}")
        sides = [self.image_size] if isinstance(self.image_size, int) else self.image_size
        k = 2 ** (len(self.channels) - 1)
        if sides[0] % k or sides[-1] % k:
            raise ConfigError(f"model.channels: {len(self.channels)} levels halve the image {k // 2 or 1} times; its "
                              f"sides {sides} must divide by {k}")
        if self.sampling.steps > self.schedule.n_steps:
            raise ConfigError(f"model.sampling.steps: at most model.schedule.n_steps={self.schedule.n_steps}")
        return self


class DiffusionModel(nn.Module):
    """The U-Net (diffusers' module names) and its noise schedule."""

    self_supervised = True  # the images are their own targets: a batch of images always has a loss
    export_refusal = ("its forward draws noise and timesteps (the denoising objective); sample with "
                      "`dlforge sample`")

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        self.config = c = config
        temb, g = 4 * c.channels[0], c.norm_groups
        self.conv_in = nn.Conv2d(c.in_channels, c.channels[0], 3, padding=1)
        self.time_embedding = TimeEmbedding(c.channels[0], temb)
        self.class_embedding = nn.Embedding(c.num_classes + 1, temb) if c.conditional else None  # last: no class
        levels = len(c.channels)
        self.down_blocks = nn.ModuleList(
            DownBlock(c.channels[max(i - 1, 0)], c.channels[i], c.layers_per_block, temb, g, c.dropout,
                      down=i < levels - 1) for i in range(levels))
        self.mid_block = MidBlock(c.channels[-1], temb, g, c.dropout, c.head_dim, c.attention)
        skips = [c.channels[0]] + [w for i, w in enumerate(c.channels)  # every skip's width, in the order made
                                   for _ in range(c.layers_per_block + (i < levels - 1))]
        ups = []
        for i, w in enumerate(reversed(c.channels)):
            used = [skips.pop() for _ in range(c.layers_per_block + 1)]
            ups.append(UpBlock(c.channels[-1] if i == 0 else c.channels[levels - i], w, used, temb, g, c.dropout,
                               up=i < levels - 1))
        self.up_blocks = nn.ModuleList(ups)
        self.conv_norm_out = nn.GroupNorm(g, c.channels[0])
        self.conv_out = nn.Conv2d(c.channels[0], c.in_channels, 3, padding=1)
        s = c.schedule
        self.schedule = NoiseSchedule(s.n_steps, s.betas, prediction=s.prediction)

    def net(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The U-Net: x_t (B, C, H, W), timesteps t (B,), class ids (B,) (num_classes: none) -> (B, C, H, W)."""
        temb = self.time_embedding(timestep_features(t, self.config.channels[0]))
        if self.class_embedding is not None:
            if labels is None:
                labels = torch.full((len(x),), self.config.num_classes, device=x.device)
            temb = temb + self.class_embedding(labels)
        h = self.conv_in(x)
        skips = [h]
        for block in self.down_blocks:
            h, made = block(h, temb)
            skips += made
        h = self.mid_block(h, temb)
        for block in self.up_blocks:
            h = block(h, skips, temb)
        return self.conv_out(F.silu(self.conv_norm_out(h)))

    def forward(self, batch: dict[str, torch.Tensor]) -> GenerativeOutput:
        x0 = batch["x"] * 2 - 1  # (B, C, H, W) in [-1, 1]
        t = torch.randint(0, self.config.schedule.n_steps, (len(x0),), device=x0.device)
        noise = torch.randn_like(x0)
        labels = None
        if self.class_embedding is not None and "y" in batch:
            labels = batch["y"].long()
            if self.training and self.config.cond_drop:  # classifier-free guidance: learn p(x) too
                dropped = torch.rand(len(labels), device=labels.device) < self.config.cond_drop
                labels = torch.where(dropped, torch.full_like(labels, self.config.num_classes), labels)
        pred = self.net(self.schedule.add_noise(x0, noise, t), t, labels)
        loss = F.mse_loss(pred, self.schedule.target(x0, noise, t))
        return GenerativeOutput(logits=pred, loss=loss, parts={})

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None,
               steps: int | None = None, sampler: str | None = None, progress: Callable[[int, int], None] | None = None,
               batch_size: int = 250, guidance: float | None = None) -> torch.Tensor:
        """n images (n, C, H, W) in [0, 1], denoised from N(0, I) in `steps` steps of `sampler` and the guidance
        scale `guidance` (the config's by default); `labels` (n,) class ids for a conditional model (none:
        unconditional); `progress(done, total)` after each step of each batch. The noise comes from `generator`
        (CPU), so a seed gives the same images on any device."""
        c, s = self.config, self.config.sampling
        steps, sampler = steps or s.steps, sampler or s.sampler
        guidance = s.guidance if guidance is None else guidance
        plan = self.schedule.plan(steps, sampler, s.spacing)
        device = next(self.parameters()).device
        sides = [c.image_size] if isinstance(c.image_size, int) else c.image_size
        out, done, total = [], 0, len(plan) * math.ceil(n / batch_size)
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            x = torch.randn(m, c.in_channels, sides[0], sides[-1], generator=generator).to(device)
            y = None if labels is None else labels[start:start + m].to(device)
            for t, prev in plan:
                pred = self._guided(x, t, y, guidance)
                noise = torch.randn(x.shape, generator=generator).to(device) if (sampler == "ddpm" and t > 0) or (
                    sampler == "ddim" and s.eta > 0) else None
                x = self.schedule.step(sampler, pred, t, prev, x, s.eta, noise=noise)
                done += 1
                if progress is not None:
                    progress(done, total)
            out.append(((x + 1) / 2).clamp(0, 1))
        return torch.cat(out)

    def _guided(self, x: torch.Tensor, t: int, labels: torch.Tensor | None, guidance: float) -> torch.Tensor:
        tt = torch.full((len(x),), t, device=x.device, dtype=torch.long)
        if labels is None or self.class_embedding is None:
            return self.net(x, tt)
        if guidance == 1.0:
            return self.net(x, tt, labels)
        none = torch.full_like(labels, self.config.num_classes)
        both = self.net(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([labels, none]))
        cond, uncond = both.chunk(2)
        return uncond + guidance * (cond - uncond)

    def diffusers_config(self) -> dict:
        """The `UNet2DModel` config whose model takes this one's state dict (without the schedule's buffers)."""
        c = self.config
        levels = len(c.channels)
        return {"sample_size": c.image_size, "in_channels": c.in_channels, "out_channels": c.in_channels,
                "block_out_channels": tuple(c.channels), "layers_per_block": c.layers_per_block,
                "down_block_types": ("DownBlock2D",) * levels, "up_block_types": ("UpBlock2D",) * levels,
                "norm_num_groups": c.norm_groups, "attention_head_dim": c.head_dim, "add_attention": c.attention,
                "dropout": c.dropout, "num_class_embeds": c.num_classes + 1 if c.conditional else None,
                "flip_sin_to_cos": True, "freq_shift": 0}

    def example_batch(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        c = self.config
        sides = [c.image_size] if isinstance(c.image_size, int) else c.image_size
        return {"x": torch.rand(batch_size, c.in_channels, sides[0], sides[-1], generator=generator),
                "y": torch.randint(0, c.num_classes, (batch_size,), generator=generator)}


# --- presets -----------------------------------------------------------------------------------------------------


@register_model(DiffusionConfig)
def ddpm_unet(**overrides) -> DiffusionModel:
    """DDPM with a small U-Net (32-64-64 channels, mid-block attention) for 28x28 images, DDIM-50 sampling."""
    return DiffusionModel(DiffusionConfig(**overrides))


@register_model(DiffusionConfig)
def ddpm_unet_cond(**overrides) -> DiffusionModel:
    """The same U-Net, class-conditional with classifier-free guidance (scale 2 when sampling)."""
    return DiffusionModel(DiffusionConfig(**{"conditional": True, "sampling": {"guidance": 2.0}, **overrides}))
