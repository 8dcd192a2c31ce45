"""The diffusion noise schedule against diffusers' DDPMScheduler and DDIMScheduler, step for step (issue 15: within
1e-5 for linear and cosine betas and the leading, trailing and linspace spacings)."""

from __future__ import annotations

import diffusers  # the dev extra
import pytest
import torch

from dlforge.layers.noise_schedule import NoiseSchedule

BETAS = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


def reference(kind: str, betas: str, prediction: str, spacing: str, clip: bool = True):
    cls = diffusers.DDPMScheduler if kind == "ddpm" else diffusers.DDIMScheduler
    return cls(num_train_timesteps=1000, beta_schedule=BETAS[betas], prediction_type=prediction,
               timestep_spacing=spacing, clip_sample=clip)


def fake_model(x: torch.Tensor, t: int) -> torch.Tensor:
    """A deterministic stand-in for a network: depends on the sample and the timestep, large enough to clip."""
    return 0.7 * x + 0.3 * torch.sin(x * 3 + t / 100)


def run_both(sampler: str, betas: str, prediction: str, spacing: str, n: int, eta: float = 0.0, clip: bool = True):
    ref = reference(sampler, betas, prediction, spacing, clip)
    ref.set_timesteps(n)
    ours = NoiseSchedule(1000, betas, prediction=prediction, clip_sample=1.0 if clip else None)
    plan = ours.plan(n, sampler, spacing)
    assert [t for t, _ in plan] == ref.timesteps.tolist()
    x0 = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    x_ref, x_ours = x0.clone(), x0.clone()
    g_ref, g_ours = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    worst = 0.0
    for t, prev in plan:
        if sampler == "ddpm":
            x_ref = ref.step(fake_model(x_ref, t), t, x_ref, generator=g_ref).prev_sample
        else:
            x_ref = ref.step(fake_model(x_ref, t), t, x_ref, eta=eta, generator=g_ref if eta else None).prev_sample
        x_ours = ours.step(sampler, fake_model(x_ours, t), t, prev, x_ours, eta=eta, generator=g_ours)
        worst = max(worst, (x_ref - x_ours).abs().max().item())
        x_ours = x_ref.clone()  # each step from the same input: step parity, not drift over the chain
    return worst


@pytest.mark.parametrize("betas", ["linear", "cosine"])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ddim_steps_equal_diffusers(betas, spacing, prediction):
    for n in (50, 7):
        assert run_both("ddim", betas, prediction, spacing, n) <= 1e-5


@pytest.mark.parametrize("betas", ["linear", "cosine"])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ddpm_steps_equal_diffusers(betas, spacing, prediction):
    for n in (50, 13):
        assert run_both("ddpm", betas, prediction, spacing, n) <= 1e-5


def test_full_chain_and_stochastic_ddim_and_no_clipping_equal_diffusers():
    assert run_both("ddpm", "linear", "epsilon", "leading", 1000) <= 1e-5  # every training timestep
    assert run_both("ddim", "cosine", "epsilon", "trailing", 20, eta=1.0) <= 1e-5  # eta > 0 draws noise
    assert run_both("ddim", "linear", "v_prediction", "leading", 10, eta=0.5, clip=False) <= 1e-5
    assert run_both("ddpm", "cosine", "epsilon", "linspace", 25, clip=False) <= 1e-5


@pytest.mark.parametrize("betas", ["linear", "cosine"])
def test_forward_process_and_v_target_equal_diffusers(betas):
    ref = reference("ddpm", betas, "v_prediction", "leading")
    ours = NoiseSchedule(1000, betas, prediction="v_prediction")
    torch.testing.assert_close(ours.alphas_cumprod, ref.alphas_cumprod, rtol=0, atol=0)
    g = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(6, 1, 5, 5, generator=g), torch.randn(6, 1, 5, 5, generator=g)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    torch.testing.assert_close(ours.add_noise(x0, noise, t), ref.add_noise(x0, noise, t), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours.target(x0, noise, t), ref.get_velocity(x0, noise, t), atol=1e-6, rtol=1e-6)
    assert torch.equal(NoiseSchedule(1000, betas).target(x0, noise, t), noise)


def test_the_v_target_recovers_the_clean_sample():
    """x_0 = sqrt(a) x_t - sqrt(1 - a) v: predicting v exactly gives x_0 back at every timestep."""
    s = NoiseSchedule(1000, "cosine", prediction="v_prediction", clip_sample=None)
    x0, noise = torch.rand(3, 1, 4, 4) * 2 - 1, torch.randn(3, 1, 4, 4)
    for t in (0, 400, 999):
        tt = torch.full((3,), t)
        x0_hat, eps_hat = s.predict_x0(s.target(x0, noise, tt), t, s.add_noise(x0, noise, tt))
        torch.testing.assert_close(x0_hat, x0, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(eps_hat, noise, atol=1e-4, rtol=1e-4)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="betas"):
        NoiseSchedule(betas="quadratic")
    with pytest.raises(ValueError, match="steps: expected 1 to 1000"):
        NoiseSchedule().timesteps(0)
    with pytest.raises(ValueError, match="spacing"):
        NoiseSchedule().timesteps(10, "uniform")
    with pytest.raises(ValueError, match="sampler"):
        NoiseSchedule().plan(10, "euler")
