"""Variational autoencoder (Kingma & Welling 2014, "Auto-encoding variational Bayes"), with beta (Higgins et al. 2017)
and the importance-weighted bound of Burda, Grosse & Salakhutdinov 2016 for evaluation.

    images x (B, C, H, W) in [0, 1]
      encoder (the autoencoder's, mlp or conv) -> (B, 2 * latent): mu and log sigma^2 of q(z | x) = N(mu, sigma^2)
      z = mu + sigma * eps, eps ~ N(0, I)                      (the reparameterization trick)
      decoder (the autoencoder's) -> logits (B, C, H, W) of p(x | z):
        bernoulli: each pixel ~ Bernoulli(sigmoid(logit))   (for 0/1 or [0, 1] pixels, as in the paper)
        gaussian:  each pixel ~ N(sigmoid(logit), s^2), one learned log s for all pixels
      prior p(z) = N(0, I)

Loss: the negative ELBO per image in nats, recon + beta * KL, where recon = -log p(x | z) summed over pixels and
KL = KL(q(z | x) || p(z)) = -1/2 sum(1 + log sigma^2 - mu^2 - sigma^2), summed over latent dimensions; both parts
travel in the output (`parts`) so they are logged beside the loss. `log_likelihood(x, k)` is the IWAE bound
log 1/k sum_i p(x, z_i) / q(z_i | x) with z_i ~ q(z | x), a lower bound on log p(x) that tightens as k grows (k = 1
is the ELBO); its negative is the NLL that VAE papers report. `sample(n)` decodes z ~ p(z); `encode` gives mu.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass
from torch import nn

from dlforge.models.autoencoder import (
    check_hidden,
    conv_decoder,
    conv_encoder,
    image_shape,
    mlp_decoder,
    mlp_encoder,
    pixel_mse,
)
from dlforge.models.output import GenerativeOutput
from dlforge.registry import register_model

LOG_2PI = math.log(2 * math.pi)


@dataclass(config=ConfigDict(extra="forbid"))
class VAEConfig:
    in_channels: int = Field(1, ge=1, description="image channels; set from the data")
    image_size: int | list[int] = Field(28, description="image side or [height, width]; set from the data")
    arch: Literal["mlp", "conv"] = Field("mlp", description="mlp: Linear layers; conv: stride-2 convs")
    hidden: list[int] = Field(default_factory=lambda: [400], description="mlp: hidden widths; conv: channels per "
                                                                        "stride-2 conv")
    latent: int = Field(20, ge=1, description="dimensions of z")
    decoder: Literal["bernoulli", "gaussian"] = Field("bernoulli", description="the pixels' likelihood p(x | z)")
    beta: float = Field(1.0, ge=0, description="weight of the KL term (1: the ELBO; beta-VAE above 1)")

    @model_validator(mode="after")
    def _check(self) -> VAEConfig:
        check_hidden(self.hidden, self.arch, self.in_channels, self.image_size)
        return self


class VAE(nn.Module):
    """`encoder` (B, C, H, W) -> (B, 2 * latent), `decoder` (B, latent) -> logits (B, C, H, W), and for a Gaussian
    decoder the pixels' `log_scale`."""

    self_supervised = True  # the images are their own targets: a batch of images always has a loss
    export_refusal = ("its forward draws a random latent (the ELBO is an objective, not an inference); sample "
                      "with `dlforge sample`, or embed with its encoder")

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = c = config
        self.shape = shape = image_shape(c.in_channels, c.image_size)
        if c.arch == "mlp":
            self.encoder = mlp_encoder(shape[0] * shape[1] * shape[2], c.hidden, 2 * c.latent)
            self.decoder = mlp_decoder(c.latent, c.hidden, shape)
        else:
            self.encoder = conv_encoder(shape, c.hidden, 2 * c.latent)
            self.decoder = conv_decoder(c.latent, c.hidden, shape)
        self.log_scale = nn.Parameter(torch.zeros(())) if c.decoder == "gaussian" else None

    def forward(self, batch: dict[str, torch.Tensor]) -> GenerativeOutput:
        x = batch["x"]  # (B, C, H, W) in [0, 1]
        mu, logvar = self.posterior(x)  # (B, latent) each
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        logits = self.decoder(z)
        recon = -self.log_px(logits, x)  # (B,) nats
        kl = -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(dim=1)  # (B,)
        loss = (recon + self.config.beta * kl).mean()
        parts = {"recon": recon.mean().detach(), "kl": kl.mean().detach(), "mse": pixel_mse(logits, x)}
        return GenerativeOutput(logits=logits, loss=loss, parts=parts)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mu and log sigma^2 of q(z | x), (B, latent) each."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def log_px(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | z) per image (B,), summed over pixels, from the decoder's logits (B, C, H, W)."""
        if self.log_scale is None:
            return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(dim=1)
        mean, log_s = torch.sigmoid(logits), self.log_scale
        return (-0.5 * ((x - mean) / log_s.exp()).square() - log_s - 0.5 * LOG_2PI).flatten(1).sum(dim=1)

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, k: int = 5000, chunk: int = 500) -> torch.Tensor:
        """The IWAE lower bound on log p(x) with k importance samples, per image (B,), nats."""
        mu, logvar = self.posterior(x)
        std = (0.5 * logvar).exp()
        terms = []
        for start in range(0, k, chunk):
            n = min(chunk, k - start)
            eps = torch.randn(n, *mu.shape, device=mu.device, dtype=mu.dtype)  # (n, B, latent)
            z = mu + eps * std
            logits = self.decoder(z.flatten(0, 1))  # (n * B, C, H, W)
            log_px = self.log_px(logits, x.repeat(n, 1, 1, 1)).view(n, -1)  # (n, B)
            log_pz = (-0.5 * z.square() - 0.5 * LOG_2PI).sum(dim=2)
            log_qz = (-0.5 * eps.square() - 0.5 * logvar - 0.5 * LOG_2PI).sum(dim=2)
            terms.append(log_px + log_pz - log_qz)
        return torch.logsumexp(torch.cat(terms), dim=0) - math.log(k)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] -> the posterior means (B, latent): the VAE's features."""
        return self.posterior(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, latent) -> images (B, C, H, W) in [0, 1]: the mean of p(x | z)."""
        return torch.sigmoid(self.decoder(z))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
               ) -> torch.Tensor:
        """n images (n, C, H, W) in [0, 1]: the decoder's means for z ~ N(0, I)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.config.latent, generator=generator).to(device)
        return self.decode(z)

    def example_batch(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        return {"x": torch.rand(batch_size, *self.shape, generator=generator)}


# --- presets -----------------------------------------------------------------------------------------------------


@register_model(VAEConfig)
def vae(**overrides) -> VAE:
    """VAE of the paper's MNIST shape: an MLP 784-400-20 (Gaussian latent) and back, Bernoulli pixels."""
    return VAE(VAEConfig(**overrides))


@register_model(VAEConfig)
def conv_vae(**overrides) -> VAE:
    """Convolutional VAE: two stride-2 convs (32, 64 channels), 20 latent dimensions, and their transposes."""
    return VAE(VAEConfig(**{"arch": "conv", "hidden": [32, 64], **overrides}))
