"""Autoencoder: an encoder compresses an image to a short code, a decoder reconstructs the image from it (Hinton &
Salakhutdinov 2006); denoising (Vincent et al. 2008) corrupts the input with Gaussian noise during training and asks
for the clean image back.

    images x (B, C, H, W) in [0, 1]
      encoder: mlp  flatten -> [Linear -> ReLU] per hidden width -> Linear -> code (B, code_size)
               conv [4x4 stride-2 conv -> BN -> ReLU] per hidden width (H/2, H/4, ...) -> flatten -> Linear -> code
      decoder: the mirror image (Linear, then 4x4 stride-2 transposed convs) -> logits (B, C, H, W)
      reconstruction = sigmoid(logits)

Loss: `mse`, the squared error of the reconstruction per pixel, or `bce`, the binary cross-entropy of the logits
against the pixels (x in [0, 1], the Bernoulli likelihood), averaged over pixels. `encode(x)` is the feature extractor
(`dlforge embed`, the VAE's means). The encoder and decoder bodies here are shared with `dlforge.models.vae`.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass
from torch import nn

from dlforge.errors import ConfigError
from dlforge.models.output import GenerativeOutput
from dlforge.registry import register_model


def mlp_encoder(in_features: int, hidden: list[int], out_features: int) -> nn.Sequential:
    """(B, C, H, W) -> (B, out_features): flatten, [Linear -> ReLU] per hidden width, Linear."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, out_features))


def mlp_decoder(code_size: int, hidden: list[int], shape: tuple[int, int, int]) -> nn.Sequential:
    """(B, code_size) -> logits (B, C, H, W): [Linear -> ReLU] per hidden width (reversed), Linear, unflatten."""
    layers: list[nn.Module] = []
    width = code_size
    for h in reversed(hidden):
        layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, shape[0] * shape[1] * shape[2]), nn.Unflatten(1, shape))


def conv_encoder(shape: tuple[int, int, int], channels: list[int], out_features: int) -> nn.Sequential:
    """(B, C, H, W) -> (B, out_features): a 4x4 stride-2 conv-BN-ReLU per width (halving H and W), flatten, Linear."""
    layers: list[nn.Module] = []
    cin = shape[0]
    for c in channels:
        layers += [nn.Conv2d(cin, c, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        cin = c
    k = 2 ** len(channels)
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(cin * (shape[1] // k) * (shape[2] // k), out_features))


def conv_decoder(code_size: int, channels: list[int], shape: tuple[int, int, int]) -> nn.Sequential:
    """(B, code_size) -> logits (B, C, H, W): Linear to the smallest map, then a 4x4 stride-2 transposed conv-BN-ReLU
    per width (reversed, doubling H and W), the last one to C channels without BN or ReLU."""
    k = 2 ** len(channels)
    h, w = shape[1] // k, shape[2] // k
    widths = list(reversed(channels))
    layers: list[nn.Module] = [nn.Linear(code_size, widths[0] * h * w), nn.ReLU(inplace=True),
                               nn.Unflatten(1, (widths[0], h, w))]
    for cin, cout in zip(widths, widths[1:], strict=False):
        layers += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                   nn.ReLU(inplace=True)]
    layers.append(nn.ConvTranspose2d(widths[-1], shape[0], 4, stride=2, padding=1))
    return nn.Sequential(*layers)


def image_shape(in_channels: int, image_size: int | list[int]) -> tuple[int, int, int]:
    sides = [image_size] if isinstance(image_size, int) else image_size
    return in_channels, sides[0], sides[-1]


def check_hidden(hidden: list[int], arch: str, in_channels: int, image_size: int | list[int]) -> None:
    """`model.hidden` of an autoencoder or VAE: positive widths, and for a conv encoder sides it can halve."""
    if not hidden or min(hidden) < 1:
        raise ConfigError(f"model.hidden: expected at least one positive width, got {hidden}")
    if arch == "conv":
        check_conv_sides(image_shape(in_channels, image_size), len(hidden))


def check_conv_sides(shape: tuple[int, int, int], depth: int) -> None:
    """A conv encoder halves the sides `depth` times: they must divide by 2**depth."""
    k = 2**depth
    if shape[1] % k or shape[2] % k:
        raise ConfigError(f"model.hidden: {depth} stride-2 convs need image sides divisible by {k}, got "
                          f"{shape[1]}x{shape[2]}; use fewer widths or arch: mlp")


def pixel_mse(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The reconstruction's squared error per pixel, sigmoid(logits) against x: a metric, detached."""
    return (torch.sigmoid(logits.detach().float()) - x.float()).square().mean()


def reconstruction_loss(logits: torch.Tensor, x: torch.Tensor, loss: str) -> torch.Tensor:
    """Per-pixel mean: squared error of sigmoid(logits), or binary cross-entropy of the logits against x in [0, 1]."""
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(logits, x)
    return F.mse_loss(torch.sigmoid(logits), x)


@dataclass(config=ConfigDict(extra="forbid"))
class AutoencoderConfig:
    in_channels: int = Field(1, ge=1, description="image channels; set from the data")
    image_size: int | list[int] = Field(28, description="image side or [height, width]; set from the data")
    arch: Literal["mlp", "conv"] = Field("mlp", description="mlp: Linear layers; conv: stride-2 convs")
    hidden: list[int] = Field(default_factory=lambda: [512, 256], description="mlp: hidden widths; conv: channels "
                                                                              "per stride-2 conv")
    code_size: int = Field(16, ge=1, description="the code's dimensions")
    loss: Literal["mse", "bce"] = Field("mse", description="mse of sigmoid outputs, or bce of the logits")
    denoise: float = Field(0.0, ge=0, description="std of Gaussian noise added to training inputs (denoising AE)")

    @model_validator(mode="after")
    def _check(self) -> AutoencoderConfig:
        check_hidden(self.hidden, self.arch, self.in_channels, self.image_size)
        return self


class Autoencoder(nn.Module):
    """`encoder` (B, C, H, W) -> (B, code_size), `decoder` back to logits (B, C, H, W)."""

    self_supervised = True  # the images are their own targets: a batch of images always has a loss

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = c = config
        shape = image_shape(c.in_channels, c.image_size)
        if c.arch == "mlp":
            self.encoder = mlp_encoder(shape[0] * shape[1] * shape[2], c.hidden, c.code_size)
            self.decoder = mlp_decoder(c.code_size, c.hidden, shape)
        else:
            self.encoder = conv_encoder(shape, c.hidden, c.code_size)
            self.decoder = conv_decoder(c.code_size, c.hidden, shape)

    def forward(self, batch: dict[str, torch.Tensor]) -> GenerativeOutput:
        x = batch["x"]  # (B, C, H, W) in [0, 1]
        noisy = x + self.config.denoise * torch.randn_like(x) if self.training and self.config.denoise else x
        logits = self.decoder(self.encoder(noisy))  # (B, C, H, W)
        loss = reconstruction_loss(logits, x, self.config.loss)
        return GenerativeOutput(logits=logits, loss=loss, parts={"mse": pixel_mse(logits, x)})

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] -> codes (B, code_size)."""
        return self.encoder(x)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """Codes (B, code_size) -> images (B, C, H, W) in [0, 1]."""
        return torch.sigmoid(self.decoder(code))

    def example_batch(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        shape = image_shape(self.config.in_channels, self.config.image_size)
        return {"x": torch.rand(batch_size, *shape, generator=generator)}


# --- presets -----------------------------------------------------------------------------------------------------


@register_model(AutoencoderConfig)
def autoencoder(**overrides) -> Autoencoder:
    """Autoencoder: an MLP 784-512-256-16 and back (code size 16), MSE."""
    return Autoencoder(AutoencoderConfig(**overrides))


@register_model(AutoencoderConfig)
def conv_autoencoder(**overrides) -> Autoencoder:
    """Convolutional autoencoder: two stride-2 convs (32, 64 channels), code size 16, and their transposes."""
    return Autoencoder(AutoencoderConfig(**{"arch": "conv", "hidden": [32, 64], **overrides}))
