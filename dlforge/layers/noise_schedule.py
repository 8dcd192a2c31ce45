"""The noise schedule of a diffusion model (Ho, Jain, Abbeel 2020, "Denoising diffusion probabilistic models"; Song,
Meng, Ermon 2021, "Denoising diffusion implicit models"), with diffusers' conventions, step for step.

    schedule = NoiseSchedule(n_steps=1000, betas="cosine", prediction="epsilon")
    x_t = schedule.add_noise(x0, noise, t)            # training: q(x_t | x_0), t (B,) ints in [0, n_steps)
    target = schedule.target(x0, noise, t)           # what the network learns: the noise, or v
    for t, prev in schedule.plan(50, sampler="ddim", spacing="trailing"):
        x = schedule.ddim_step(model(x, t), t, prev, x)   # or ddpm_step(..., generator=g)

Betas: `linear` from beta_start to beta_end, or `cosine` (Nichol & Dhariwal 2021: alpha_bar(t) = cos((t + 0.008) /
1.008 * pi / 2)^2, each beta capped at 0.999; diffusers' `squaredcos_cap_v2`). As in diffusers, betas and their
cumulative products are float32.

Timestep spacing for sampling with fewer steps than training (`timesteps(n, spacing)`, diffusers' `set_timesteps`):
`leading` (0, T//n, 2T//n, ... plus `offset`, descending), `trailing` (T-1, T-1-T/n, ... rounded: starts at the
noisiest step, as Lin et al. 2024 recommend) and `linspace` (n points from 0 to T-1, rounded).

Steps. DDPM (ancestral): from t to the previous timestep of the plan, the posterior mean of x_{prev} given x_t and
the predicted x_0, plus the `fixed_small` posterior variance's noise when t > 0. DDIM (eta = 0: deterministic;
eta = 1: DDPM's variance): the previous timestep is t - T // n, as diffusers' `DDIMScheduler` computes it whatever
the spacing, and alpha_bar of a negative timestep is 1 (`set_alpha_to_one`). The predicted x_0 is clipped to
[-clip_sample, clip_sample] (diffusers' `clip_sample`, default on) unless clip_sample is None. tests/layers/
test_noise_schedule.py checks every step against diffusers' DDPMScheduler.step and DDIMScheduler.step.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import nn

BETA_SCHEDULES = ("linear", "cosine")
SPACINGS = ("leading", "trailing", "linspace")
PREDICTIONS = ("epsilon", "v_prediction")
SAMPLERS = ("ddpm", "ddim")


def cosine_betas(n_steps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Betas whose cumulative product of (1 - beta) follows alpha_bar(t) = cos((t + 0.008) / 1.008 * pi / 2)^2."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / n_steps) / alpha_bar(i / n_steps), max_beta) for i in range(n_steps)]
    return torch.tensor(betas, dtype=torch.float32)


class NoiseSchedule(nn.Module):
    """The forward process's alpha_bar per timestep and the reverse steps. Buffers only (no parameters), rebuilt from
    the arguments, so they follow the model's device and never enter its weights file."""

    def __init__(self, n_steps: int = 1000, betas: Literal["linear", "cosine"] = "linear", beta_start: float = 1e-4,
                 beta_end: float = 0.02, prediction: Literal["epsilon", "v_prediction"] = "epsilon",
                 clip_sample: float | None = 1.0):
        super().__init__()
        if betas not in BETA_SCHEDULES:
            raise ValueError(f"betas: expected one of {', '.join(BETA_SCHEDULES)}, got {betas!r}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction: expected one of {', '.join(PREDICTIONS)}, got {prediction!r}")
        self.n_steps, self.prediction, self.clip_sample = n_steps, prediction, clip_sample
        if betas == "linear":
            beta = torch.linspace(beta_start, beta_end, n_steps, dtype=torch.float32)
        else:
            beta = cosine_betas(n_steps)
        self.register_buffer("betas", beta, persistent=False)
        self.register_buffer("alphas_cumprod", torch.cumprod(1.0 - beta, dim=0), persistent=False)  # alpha_bar (T,)

    # --- training: the forward process ---------------------------------------------------------------------------

    def _at(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) for timesteps t (B,), shaped to broadcast over `like`."""
        a = self.alphas_cumprod.to(like.device)[t].to(like.dtype)
        shape = (-1,) + (1,) * (like.ndim - 1)
        return a.sqrt().view(shape), (1 - a).sqrt().view(shape)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise, per sample's timestep t (B,)."""
        sa, sb = self._at(t, x0)
        return sa * x0 + sb * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network predicts: the noise (epsilon), or v = sqrt(alpha_bar) noise - sqrt(1 - alpha_bar) x_0."""
        if self.prediction == "epsilon":
            return noise
        sa, sb = self._at(t, x0)
        return sa * noise - sb * x0

    # --- sampling: the reverse process ---------------------------------------------------------------------------

    def timesteps(self, n: int, spacing: str = "leading", offset: int = 0) -> list[int]:
        """The `n` timesteps a sampler visits, noisiest first (diffusers' `set_timesteps`)."""
        T = self.n_steps
        if not 1 <= n <= T:
            raise ValueError(f"steps: expected 1 to {T} (the training steps), got {n}")
        if spacing == "linspace":
            ts = np.linspace(0, T - 1, n).round()[::-1].astype(np.int64)
        elif spacing == "leading":
            ts = (np.arange(0, n) * (T // n)).round()[::-1].astype(np.int64) + offset
        elif spacing == "trailing":
            ts = np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1
        else:
            raise ValueError(f"spacing: expected one of {', '.join(SPACINGS)}, got {spacing!r}")
        return [int(t) for t in ts]

    def plan(self, n: int, sampler: str = "ddim", spacing: str = "leading", offset: int = 0) -> list[tuple[int, int]]:
        """(t, previous t) for each of `n` steps, -1 for the last one's: DDPM's previous t is the plan's next one,
        DDIM's t - T // n (as diffusers computes them)."""
        ts = self.timesteps(n, spacing, offset)
        if sampler == "ddpm":
            return list(zip(ts, [*ts[1:], -1], strict=True))
        if sampler == "ddim":
            return [(t, t - self.n_steps // n) for t in ts]
        raise ValueError(f"sampler: expected one of {', '.join(SAMPLERS)}, got {sampler!r}")

    def _alpha_bar(self, t: int) -> torch.Tensor:
        return self.alphas_cumprod[t] if t >= 0 else torch.ones((), device=self.alphas_cumprod.device)

    def predict_x0(self, output: torch.Tensor, t: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The predicted clean sample x_0 (clipped when clip_sample is set) and noise from the network's `output` at
        timestep t for x_t; the noise is computed before clipping, as diffusers does."""
        a = self._alpha_bar(t)
        b = 1 - a
        if self.prediction == "epsilon":
            x0, eps = (x - b**0.5 * output) / a**0.5, output
        else:  # v
            x0, eps = a**0.5 * x - b**0.5 * output, a**0.5 * output + b**0.5 * x
        if self.clip_sample is not None:
            x0 = x0.clamp(-self.clip_sample, self.clip_sample)
        return x0, eps

    def ddpm_step(self, output: torch.Tensor, t: int, prev: int, x: torch.Tensor,
                  generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """x_prev ~ q(x_prev | x_t, x_0 predicted): the posterior mean, plus sigma * noise if t > 0 (`noise`, or
        drawn from `generator`), sigma^2 = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t /
        alpha_bar_prev)."""
        a_t, a_prev = self._alpha_bar(t), self._alpha_bar(prev)
        b_t, b_prev = 1 - a_t, 1 - a_prev
        alpha_t = a_t / a_prev
        beta_t = 1 - alpha_t
        x0, _ = self.predict_x0(output, t, x)
        mean = (a_prev**0.5 * beta_t) / b_t * x0 + alpha_t**0.5 * b_prev / b_t * x
        if t == 0:
            return mean
        variance = torch.clamp(b_prev / b_t * beta_t, min=1e-20)
        if noise is None:
            noise = torch.randn(output.shape, generator=generator, device=output.device, dtype=output.dtype)
        return mean + variance**0.5 * noise

    def ddim_step(self, output: torch.Tensor, t: int, prev: int, x: torch.Tensor, eta: float = 0.0,
                  generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """x_prev = sqrt(alpha_bar_prev) x_0 + sqrt(1 - alpha_bar_prev - sigma^2) eps (+ sigma noise when eta > 0),
        sigma = eta * sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev))."""
        a_t, a_prev = self._alpha_bar(t), self._alpha_bar(prev)
        x0, eps = self.predict_x0(output, t, x)
        sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
        out = a_prev**0.5 * x0 + (1 - a_prev - sigma**2) ** 0.5 * eps
        if eta > 0:
            if noise is None:
                noise = torch.randn(output.shape, generator=generator, device=output.device, dtype=output.dtype)
            out = out + sigma * noise
        return out

    def step(self, sampler: str, output: torch.Tensor, t: int, prev: int, x: torch.Tensor, eta: float = 0.0,
             generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """One reverse step of `sampler` (ddpm or ddim); the noise it adds is `noise`, or drawn from `generator`."""
        if sampler == "ddpm":
            return self.ddpm_step(output, t, prev, x, generator, noise)
        return self.ddim_step(output, t, prev, x, eta, generator, noise)
