"""Generative models' speed: the diffusion U-Net's and DCGAN's training steps through dlforge against plain PyTorch
loops of the same networks, and DDIM sampling against diffusers' DDIMPipeline with the same U-Net weights.

- `--bench diffusion`: dlforge's `ddpm_unet` through the Trainer (JSONL logger on) against a hand loop over the same
  network (`model.net`) with the noising written out; AdamW, fp32, batch `--batch` of 1x28x28 images.
- `--bench gan`: `dcgan` through the adversarial Trainer against the DCGAN example's loop (D step on real and
  generated images with BCE, then G step), both with Adam(2e-4, betas 0.5, 0.999).
- `--bench ddim`: images/s of `model.sample(n, steps=50)` (DDIM, trailing spacing) against diffusers'
  `DDIMPipeline` over `UNet2DModel(**model.diffusers_config())` loaded with the same state dict.

Paired, interleaved rounds (at least 10); prints the median ratio dlforge/baseline with min and max (above 1: dlforge
faster; target >= 0.97 for the training steps).

    python bench/generative_step.py --bench diffusion|gan|ddim [--rounds 10] [--steps 10] [--batch 128] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dlforge.config import TrainConfig
from dlforge.data.dataset import TensorDictDataset
from dlforge.registry import create_model
from dlforge.train.adversarial import AdversarialTrainer
from dlforge.train.callbacks import MetricsLogger
from dlforge.train.trainer import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from paired import StepClock, hand_loop, paired_rounds, per_step, summary  # noqa: E402

N, SIZE = 2048, 28


def config(args, **extra) -> TrainConfig:
    return TrainConfig(max_steps=args.steps, batch_size=args.batch, log_every=10, checkpoint_every=None,
                       progress=False, tensorboard=False, device="cpu", **extra)


def trainer_round(name: str, args, data: TensorDictDataset, run_dir: Path) -> float:
    torch.manual_seed(0)
    model = create_model(name, image_size=SIZE, **({} if name == "dcgan" else {"channels": args.channels}))
    adversarial = getattr(model, "adversarial", False)
    cfg = config(args, optimizer="adam" if adversarial else "adamw", lr=2e-4,
                 **({"betas": (0.5, 0.999)} if adversarial else {"weight_decay": 0.0}))
    clock = StepClock()
    cls = AdversarialTrainer if adversarial else Trainer
    cls(model, cfg, data, callbacks=[MetricsLogger(run_dir, tensorboard=False), clock]).fit()
    return per_step(clock.times)


def plain_diffusion_round(args, x: torch.Tensor) -> float:
    torch.manual_seed(0)
    model = create_model("ddpm_unet", image_size=SIZE, channels=args.channels)
    alpha_bar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), dim=0)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.0)

    def step(idx: torch.Tensor) -> None:
        x0 = x[idx] * 2 - 1
        t = torch.randint(0, 1000, (len(idx),))
        noise = torch.randn_like(x0)
        a = alpha_bar[t].view(-1, 1, 1, 1)
        F.mse_loss(model.net(a.sqrt() * x0 + (1 - a).sqrt() * noise, t), noise).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return hand_loop(step, len(x), args.batch, args.steps)


def plain_gan_round(args, x: torch.Tensor) -> float:
    torch.manual_seed(0)
    gan = create_model("dcgan", image_size=SIZE)
    g, d = gan.generator, gan.discriminator
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def step(idx: torch.Tensor) -> None:
        real = x[idx] * 2 - 1
        b = len(real)
        fake = g(torch.randn(b, 100))
        out_real, out_fake = d(real), d(fake.detach())
        loss_d = (F.binary_cross_entropy_with_logits(out_real, torch.ones(b))
                  + F.binary_cross_entropy_with_logits(out_fake, torch.zeros(b)))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        out = d(g(torch.randn(b, 100)))
        loss_g = F.binary_cross_entropy_with_logits(out, torch.ones(b))
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()

    return hand_loop(step, len(x), args.batch, args.steps)


def ddim_rounds(args) -> tuple[list[float], list[float]]:
    from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel

    torch.manual_seed(0)
    model = create_model("ddpm_unet", image_size=SIZE, channels=args.channels).eval()
    unet = UNet2DModel(**model.diffusers_config()).eval()
    unet.load_state_dict(model.state_dict())
    pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                                          timestep_spacing="trailing"))
    pipe.set_progress_bar_config(disable=True)
    n = args.batch

    def ours(r: int) -> float:
        start = time.perf_counter()
        model.sample(n, generator=torch.Generator().manual_seed(r), steps=50)
        return time.perf_counter() - start

    def theirs(r: int) -> float:
        start = time.perf_counter()
        with torch.no_grad():
            pipe(batch_size=n, generator=torch.Generator().manual_seed(r), num_inference_steps=50, eta=0.0,
                 output_type="np")
        return time.perf_counter() - start

    ours(0), theirs(0)  # warm up
    return paired_rounds(ours, theirs, args.rounds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", choices=["diffusion", "gan", "ddim"], required=True)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--channels", default="16,32,64", help="the U-Net's widths (default: the fashion-ddpm preset's)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.channels = [int(c) for c in args.channels.split(",")]

    x = torch.rand(N, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    data = TensorDictDataset({"x": x, "y": torch.randint(0, 10, (N,), generator=torch.Generator().manual_seed(1))})
    if args.bench == "ddim":
        t_ours, t_base = ddim_rounds(args)
        widths = "-".join(map(str, args.channels))
        result = {"benchmark": "ddim_sampling", "model": f"ddpm_unet {widths}, 50 DDIM steps", "images": args.batch,
                  "baseline": "diffusers DDIMPipeline", **summary(t_ours, t_base, args.batch)}
    else:
        name = "ddpm_unet" if args.bench == "diffusion" else "dcgan"
        plain = plain_diffusion_round if args.bench == "diffusion" else plain_gan_round
        with tempfile.TemporaryDirectory() as tmp:
            plain(args, x)  # warm up

            def ours(r: int) -> float:
                run_dir = Path(tmp) / f"r{r}"
                run_dir.mkdir()
                return trainer_round(name, args, data, run_dir)

            t_ours, t_base = paired_rounds(ours, lambda r: plain(args, x), args.rounds)
        shown = name if name == "dcgan" else f"{name} {'-'.join(map(str, args.channels))}"
        result = {"benchmark": f"{args.bench}_step", "model": shown, "batch_size": args.batch,
                  "baseline": "a plain PyTorch loop", **summary(t_ours, t_base, args.batch)}
    result.update({"rounds": args.rounds, "threads": torch.get_num_threads()})
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['benchmark']}: {result['model']}, {args.rounds} paired rounds, {result['threads']} threads")
    print(f"images/s: dlforge {result['samples_per_s_dlforge']:.1f}, {result['baseline']} "
          f"{result['samples_per_s_baseline']:.1f} (medians)")
    print(f"ratio dlforge/baseline: median {result['ratio_median']:.3f}  min {result['ratio_min']:.3f}  "
          f"max {result['ratio_max']:.3f}")


if __name__ == "__main__":
    main()
