"""Autoencoder and VAE: the ELBO equals reconstruction + KL on a hand-computable case, the IWAE bound approaches the
exact log-likelihood from below and tightens with k, conv variants keep shapes, denoising only in training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dlforge.errors import ConfigError
from dlforge.registry import create_model


def constant_vae(mu: float, logvar: float, logits: torch.Tensor):
    """A VAE whose encoder gives (mu, logvar) for every image and whose decoder gives `logits` whatever z is: every
    weight 0, the last layers' biases set."""
    model = create_model("vae", image_size=[1, 3], hidden=[4], latent=2)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.encoder[-1].bias.copy_(torch.tensor([mu, mu, logvar, logvar]))
        model.decoder[-2].bias.copy_(logits)  # the Linear before the Unflatten
    return model


def test_elbo_is_reconstruction_plus_kl_by_hand():
    logits = torch.tensor([0.5, -1.0, 2.0])
    model = constant_vae(mu=0.5, logvar=math.log(0.25), logits=logits)
    x = torch.tensor([[[[1.0, 0.0, 1.0]]], [[[0.0, 0.0, 1.0]]]])  # (2, 1, 1, 3)
    out = model({"x": x})
    p = torch.sigmoid(logits)
    recon = [-(xi * p.log() + (1 - xi) * (1 - p).log()).sum() for xi in x.view(2, 3)]
    kl_one = -0.5 * (1 + math.log(0.25) - 0.25 - 0.25)  # per latent dimension, closed form
    assert out.parts["recon"].item() == pytest.approx(float(sum(recon) / 2), rel=1e-6)
    assert out.parts["kl"].item() == pytest.approx(2 * kl_one, rel=1e-6)
    assert out.loss.item() == pytest.approx(float(sum(recon) / 2) + 2 * kl_one, rel=1e-6)
    beta = create_model("vae", image_size=[1, 3], hidden=[4], latent=2, beta=4.0)
    beta.load_state_dict(model.state_dict())
    assert beta({"x": x}).loss.item() == pytest.approx(float(sum(recon) / 2) + 8 * kl_one, rel=1e-6)


def test_iwae_bound_is_below_log_likelihood_and_tightens_with_k():
    """With a decoder that ignores z, log p(x) is exact and E[IWAE_1] = log p(x) - KL(q || p) in closed form."""
    torch.manual_seed(0)
    logits = torch.tensor([0.3, -0.7, 1.2])
    model = constant_vae(mu=0.8, logvar=math.log(0.8), logits=logits).eval()  # weights of finite variance
    x = torch.tensor([[[[1.0, 0.0, 1.0]]]])
    exact = -F.binary_cross_entropy_with_logits(logits, x.view(3), reduction="sum").item()
    kl = 2 * -0.5 * (1 + math.log(0.8) - 0.8**2 - 0.8)
    k1 = model.log_likelihood(x.repeat(4000, 1, 1, 1), 1).mean().item()  # 4000 single-sample bounds
    k10 = model.log_likelihood(x.repeat(1000, 1, 1, 1), 10).mean().item()
    assert k1 == pytest.approx(exact - kl, abs=0.03)
    assert k1 < k10 < exact
    assert model.log_likelihood(x, 50000).item() == pytest.approx(exact, abs=0.02)


def test_trained_vae_iwae_bound_beats_its_elbo():
    torch.manual_seed(0)
    model = create_model("vae", image_size=8, hidden=[32], latent=4)
    x = (torch.rand(64, 1, 8, 8) > 0.5).float()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(60):
        opt.zero_grad()
        model({"x": x}).loss.backward()
        opt.step()
    model.eval()
    elbo = torch.stack([-model({"x": x}).loss for _ in range(200)]).mean().item()  # many single-sample estimates
    iwae = model.log_likelihood(x, 500).mean().item()
    assert iwae > elbo  # log p(x) >= IWAE_k >= ELBO


@pytest.mark.parametrize("name", ["conv_autoencoder", "conv_vae"])
def test_conv_variants_reconstruct_at_the_input_shape(name):
    model = create_model(name, image_size=28, in_channels=1)
    x = torch.rand(3, 1, 28, 28)
    out = model({"x": x})
    assert out.logits.shape == x.shape
    assert model.encode(x).shape[0] == 3
    assert model.decode(model.encode(x)).shape == x.shape


def test_conv_sides_must_halve_cleanly():
    with pytest.raises(ConfigError, match=r"model\.hidden: 3 stride-2 convs need image sides divisible by 8"):
        create_model("conv_autoencoder", image_size=28, hidden=[8, 16, 32])


def test_denoising_corrupts_training_inputs_only():
    torch.manual_seed(0)
    model = create_model("autoencoder", image_size=8, hidden=[16], code_size=4, denoise=0.5)
    x = torch.rand(4, 1, 8, 8)
    model.train()
    a, b = model({"x": x}).logits, model({"x": x}).logits
    assert not torch.equal(a, b)  # fresh noise each call
    model.eval()
    assert torch.equal(model({"x": x}).logits, model({"x": x}).logits)


def test_sampling_is_seeded():
    model = create_model("vae", image_size=8, hidden=[16], latent=3).eval()
    a = model.sample(5, generator=torch.Generator().manual_seed(1))
    b = model.sample(5, generator=torch.Generator().manual_seed(1))
    c = model.sample(5, generator=torch.Generator().manual_seed(2))
    assert a.shape == (5, 1, 8, 8) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
