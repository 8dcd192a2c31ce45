"""DCGAN (Radford, Metz, Chintala 2016): a generator and a discriminator that compete (Goodfellow et al. 2014).

    z (B, noise_dim) ~ N(0, I) [+ class embedding]
      generator: Linear -> (B, c_top, H/2^k, W/2^k) -> BN -> ReLU,
                 [4x4 stride-2 transposed conv -> BN -> ReLU] per width (halving the channels), the last to C channels
                 -> tanh: images in [-1, 1], shown as (x + 1) / 2
    images (B, C, H, W) in [-1, 1]
      discriminator: [4x4 stride-2 conv -> (BN) -> LeakyReLU(0.2)] per width (no BN on the first, none at all with
                     spectral norm) -> flatten -> Linear -> one logit per image: real or generated

Losses (the model computes them; `dlforge.train.adversarial` steps the two optimizers): `non_saturating`, the
discriminator's binary cross-entropy on real (1) and generated (0) images and the generator's -log D(G(z)) (the
paper's practical form); `hinge` (Lim & Ye 2017; Miyato et al. 2018), mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))
and -mean(D(G(z))). `spectral_norm` wraps every discriminator layer in torch's spectral normalization (Miyato et al.
2018). Weights start from N(0, 0.02) and BN scales from N(1, 0.02), as the paper does. A class-conditional GAN adds
a class embedding to z and a projection term to the discriminator's logit (Miyato & Koyama 2018).
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


class Generator(nn.Module):
    """z (B, noise_dim) -> images (B, C, H, W) in [-1, 1]."""

    def __init__(self, noise_dim: int, widths: list[int], shape: tuple[int, int, int]):
        super().__init__()
        k = 2 ** len(widths)
        self.top = (widths[0], shape[1] // k, shape[2] // k)
        self.project = nn.Linear(noise_dim, widths[0] * self.top[1] * self.top[2], bias=False)
        self.norm = nn.BatchNorm2d(widths[0])
        layers: list[nn.Module] = []
        for cin, cout in zip(widths, widths[1:], strict=False):
            layers += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(widths[-1], shape[0], 4, stride=2, padding=1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(len(z), *self.top)
        return self.body(F.relu(self.norm(h)))


class Discriminator(nn.Module):
    """Images (B, C, H, W) in [-1, 1] -> features (B, F) -> logit (B,), plus a class projection when conditional."""

    def __init__(self, widths: list[int], shape: tuple[int, int, int], spectral: bool, num_classes: int | None):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm if spectral else (lambda m: m)
        layers: list[nn.Module] = []
        cin = shape[0]
        for i, c in enumerate(widths):
            layers.append(sn(nn.Conv2d(cin, c, 4, stride=2, padding=1, bias=spectral or i == 0)))
            if i > 0 and not spectral:
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            cin = c
        k = 2 ** len(widths)
        features = cin * (shape[1] // k) * (shape[2] // k)
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.head = sn(nn.Linear(features, 1))
        self.embed = sn(nn.Embedding(num_classes, features)) if num_classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.body(x)  # (B, F)
        logit = self.head(h).squeeze(1)
        if self.embed is not None and labels is not None:  # the projection discriminator's class term
            logit = logit + (self.embed(labels) * h).sum(dim=1)
        return logit


@dataclass(config=ConfigDict(extra="forbid"))
class DCGANConfig:
    in_channels: int = Field(1, ge=1, description="image channels; set from the data")
    image_size: int | list[int] = Field(28, description="image side or [height, width]; set from the data")
    num_classes: int = Field(10, ge=1, description="classes of a conditional GAN; set from the data")
    noise_dim: int = Field(100, ge=1, description="dimensions of z")
    g_widths: list[int] = Field(default_factory=lambda: [128, 64], description="generator channels, top down")
    d_widths: list[int] = Field(default_factory=lambda: [64, 128], description="discriminator channels")
    loss: Literal["non_saturating", "hinge"] = "non_saturating"
    spectral_norm: bool = Field(False, description="spectral normalization on every discriminator layer")
    conditional: bool = Field(False, description="class-conditional (z + class embedding, projection D)")
    d_lr_scale: float = Field(1.0, gt=0, description="the discriminator's learning rate over train.lr")

    @model_validator(mode="after")
    def _check(self) -> DCGANConfig:
        sides = [self.image_size] if isinstance(self.image_size, int) else self.image_size
        for key, widths in (("g_widths", self.g_widths), ("d_widths", self.d_widths)):
            k = 2 ** len(widths)
            if not widths or min(widths) < 1 or sides[0] % k or sides[-1] % k:
                raise ConfigError(f"model.{key}: {len(widths)} stride-2 layers need image sides divisible by {k}, "
                                  f"got {sides[0]}x{sides[-1]} and widths {widths}")
        return self


class DCGAN(nn.Module):
    """`generator` and `discriminator`; `forward(batch, player=...)` gives one player's loss, for the adversarial
    step (`dlforge.train.adversarial`), or both on a batch of real images."""

    self_supervised = True  # real images are all it needs
    adversarial = True  # two players, two optimizers: trained by dlforge.train.adversarial
    export_refusal = "its forward draws random noise for both players' losses; sample with `dlforge sample`"

    def __init__(self, config: DCGANConfig):
        super().__init__()
        self.config = c = config
        sides = [c.image_size] if isinstance(c.image_size, int) else c.image_size
        self.shape = (c.in_channels, sides[0], sides[-1])
        self.generator = Generator(c.noise_dim, c.g_widths, self.shape)
        self.discriminator = Discriminator(c.d_widths, self.shape, c.spectral_norm,
                                           c.num_classes if c.conditional else None)
        self.class_embedding = nn.Embedding(c.num_classes, c.noise_dim) if c.conditional else None
        self.apply(_dcgan_init)

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, noise_dim) [and class ids (B,)] -> images (B, C, H, W) in [-1, 1]."""
        if self.class_embedding is not None and labels is not None:
            z = z + self.class_embedding(labels)
        return self.generator(z)

    def _noise(self, n: int, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(n, self.config.noise_dim, device=like.device, dtype=like.dtype)

    def discriminator_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """D's loss on the batch's real images and as many generated ones (the generator gets no gradient)."""
        real = batch["x"] * 2 - 1
        labels = batch.get("y") if self.config.conditional else None
        with torch.no_grad():
            fake = self.generate(self._noise(len(real), real), labels)
        d_real, d_fake = self.discriminator(real, labels), self.discriminator(fake, labels)
        if self.config.loss == "hinge":
            return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        return (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))

    def generator_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """G's loss on generated images as the discriminator judges them."""
        x = batch["x"]
        labels = batch.get("y") if self.config.conditional else None
        d_fake = self.discriminator(self.generate(self._noise(len(x), x), labels), labels)
        if self.config.loss == "hinge":
            return -d_fake.mean()
        return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))  # -log D(G(z))

    def generator_parameters(self):
        """(name, parameter) of the generator's player: the generator and the class embedding."""
        return [(n, p) for n, p in self.named_parameters() if not n.startswith("discriminator.")]

    def discriminator_parameters(self):
        return [(n, p) for n, p in self.named_parameters() if n.startswith("discriminator.")]

    def forward(self, batch: dict[str, torch.Tensor], player: str | None = None) -> GenerativeOutput:
        """One player's loss (`player`: discriminator or generator, the adversarial step's), or both on a batch
        (evaluation): the loss is their sum, the parts each."""
        if player == "discriminator":
            return GenerativeOutput(logits=batch["x"], loss=self.discriminator_loss(batch))
        if player == "generator":
            return GenerativeOutput(logits=batch["x"], loss=self.generator_loss(batch))
        d, g = self.discriminator_loss(batch), self.generator_loss(batch)
        real_logit = self.discriminator(batch["x"] * 2 - 1, batch.get("y") if self.config.conditional else None)
        return GenerativeOutput(logits=real_logit, loss=d + g, parts={"d_loss": d.detach(), "g_loss": g.detach()})

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
               ) -> torch.Tensor:
        """n images (n, C, H, W) in [0, 1] from z ~ N(0, I) drawn with `generator` (CPU: the same on any device)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.config.noise_dim, generator=generator).to(device)
        images = self.generate(z, None if labels is None else labels.to(device))
        return (images + 1) / 2

    def example_batch(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        return {"x": torch.rand(batch_size, *self.shape, generator=generator),
                "y": torch.randint(0, self.config.num_classes, (batch_size,), generator=generator)}


def _dcgan_init(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        weight = getattr(m, "parametrizations", None)
        w = weight.weight.original if weight is not None else m.weight
        nn.init.normal_(w, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


# --- presets -----------------------------------------------------------------------------------------------------


@register_model(DCGANConfig)
def dcgan(**overrides) -> DCGAN:
    """DCGAN for 28x28 images: z of 100 -> 128x7x7 -> 64x14x14 -> 28x28; D 64-128 channels; non-saturating loss."""
    return DCGAN(DCGANConfig(**overrides))


@register_model(DCGANConfig)
def dcgan_sn(**overrides) -> DCGAN:
    """DCGAN with spectral normalization in the discriminator and the hinge loss (SN-GAN's recipe)."""
    return DCGAN(DCGANConfig(**{"spectral_norm": True, "loss": "hinge", **overrides}))
