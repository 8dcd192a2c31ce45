"""Generation: models that learn the distribution of images in [0, 1] (`data: {task: generation}`) to reconstruct,
encode and sample them: autoencoders, VAEs, GANs and diffusion models (`dlforge.models.autoencoder`, `.vae`, `.dcgan`,
`.diffusion`). GANs train with the adversarial step (`trainer_class`, `dlforge.train.adversarial`).

Metrics, per split: the loss's named parts averaged per image: `mse`, the reconstruction's squared error per pixel
(autoencoders, VAEs), a VAE's `recon` and `kl` in nats and `elbo` = -(recon + kl), a GAN's `d_loss` and `g_loss`.
At the end of the run, on the validation and test splits (`data.generation`): `nll_iwae`, the VAE's
importance-weighted bound on -log p(x) in nats with `iwae_k` samples over the first `iwae_images` images, beside
`nll_pixels`, the exact NLL of independent Bernoulli pixels with the training split's pixel means (the baseline a
VAE must beat); with an `extractor` (a classifier run), FID, KID and IS of `samples` seeded samples against as many
images of the split (`dlforge.eval.generative`), the share classified with confidence > 0.9, the smallest class
share, a conditional model's class match, and the reference rows: real training images (`*_floor`) and Gaussian
noise (`*_ceiling`) against the same images. A missing extractor run skips them with a note, losing nothing else.
Report: plots/reconstructions.png (test images over their reconstructions), plots/samples.png (64 seeded samples,
a class per column for a conditional model), plots/interpolation.png (decoded walks between the latents of test
images, a VAE's) and plots/latent_grid.png (the decoder over a grid of the first two latent dimensions).
"""

from __future__ import annotations

import math
import sys
from typing import Any

import torch

from dlforge.errors import ConfigError, DlforgeError
from dlforge.eval.metrics import TaskMetrics
from dlforge.models.output import Output
from dlforge.registry import register_task
from dlforge.tasks.base import GENERATIVE_FIELDS, RunReport, Task

SHOWN = 16  # test images in plots/reconstructions.png and walks in plots/interpolation.png


class GenerationMetrics(TaskMetrics):
    """The loss's named parts (a `GenerativeOutput`'s: reconstruction MSE per pixel, a VAE's recon and kl), averaged
    per image, and the ELBO from recon and kl."""

    task = "generation"

    def __init__(self, loss_name: str = ""):
        self.loss_name = loss_name
        self.updates = 0
        self.sums: dict[str, float] = {}
        self.count = 0

    @torch.no_grad()
    def update(self, output: Output, batch: dict[str, torch.Tensor]) -> None:
        n = len(batch["x"])
        for name, value in (getattr(output, "parts", None) or {}).items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value) * n
        self.count += n
        self.updates += 1

    def compute(self) -> dict[str, float]:
        if not self.count:
            return {}
        result = {name: total / self.count for name, total in self.sums.items()}
        if "recon" in result and "kl" in result:
            result["elbo"] = -(result["recon"] + result["kl"])
        return result

    def reset(self) -> None:
        self.sums, self.count, self.updates = {}, 0, 0

    def to(self, device: torch.device | str) -> GenerationMetrics:
        return self


@register_task("generation")
class Generation(Task):
    """Images to reconstruct, encode and sample."""

    name = "generation"
    report_key = "generation"

    def metric_set(self, loss_name: str = "") -> GenerationMetrics:
        return GenerationMetrics(loss_name)

    def metrics(self, info: dict[str, Any], loss_name: str = "", split: str = "val") -> GenerationMetrics:
        return GenerationMetrics(loss_name)

    def model_options(self, user: dict[str, Any], fields: set[str], info: dict[str, Any], data_name: str
                      ) -> dict[str, Any]:
        if not fields & GENERATIVE_FIELDS:
            raise ConfigError(f"model: data {data_name!r} is for generative models (data.task: generation); use "
                              "one: autoencoder, conv_autoencoder, vae, conv_vae, dcgan, dcgan_sn, ddpm_unet, "
                              "ddpm_unet_cond")
        return user

    def trainer_class(self, model: torch.nn.Module) -> type:
        """GANs (`adversarial = True`) train with the adversarial step, every other model with the Trainer's."""
        if getattr(model, "adversarial", False):
            from dlforge.train.adversarial import AdversarialTrainer

            return AdversarialTrainer
        return super().trainer_class(model)

    def decoded_scores(self, model: torch.nn.Module, dataset: Any, info: dict[str, Any], tokenizer: Any,
                       model_meta: dict[str, Any], train: Any = None) -> tuple[dict[str, float], dict[str, Any]] | None:
        """The IWAE bound on the NLL of the split's first images (VAEs) beside the independent-pixel baseline; FID,
        KID and IS of samples against the split on the declared extractor (models that sample), with the
        reference rows."""
        options = info.get("generation") or {}
        scores: dict[str, float] = {}
        report: dict[str, Any] = {}
        was_training = model.training
        model.eval()
        try:
            if options.get("iwae_k") and hasattr(model, "log_likelihood"):
                scores_nll, report["iwae"] = _iwae(model, dataset, info, options)
                scores.update(scores_nll)
            if options.get("extractor") and hasattr(model, "sample"):
                try:
                    scores_fid, report["fid"] = self._fid(model, dataset, train, info, options)
                    scores.update(scores_fid)
                except DlforgeError as exc:  # no extractor run yet: the run's other results stand, and say why
                    print(f"note: FID, KID and IS skipped: {exc}", file=sys.stderr, flush=True)
                    report["fid"] = {"skipped": str(exc)}
        finally:
            model.train(was_training)
        return (scores, report) if scores or report else None

    def _fid(self, model: torch.nn.Module, dataset: Any, train: Any, info: dict[str, Any], options: dict[str, Any]
             ) -> tuple[dict[str, float], dict[str, Any]]:
        """FID/KID/IS of `samples` generated images against as many of the split's; the floor (as many training
        images against the split) and the ceiling (Gaussian noise against it). The samples are drawn once per
        model and reused for the next split."""
        from dlforge.eval.generative import generation_scores, load_extractor

        device = next(model.parameters()).device
        extractor = load_extractor(options["extractor"], device)
        n = min(options.get("samples", 1000), len(dataset))
        images, labels = self._samples(model, n, info)
        real = extractor.extract(_images(dataset, n))
        fake = extractor.extract(images)
        scores = generation_scores(real, fake, kid_subset_size=min(1000, n))
        if labels is not None:  # a class-conditional model: do its samples show their class?
            scores["class_match"] = float((fake.logits.argmax(dim=1) == labels).double().mean())
        rows = {"model": scores}
        if train is not None:
            rows["real train (floor)"] = generation_scores(real, extractor.extract(_images(train, n)),
                                                           kid_subset_size=min(1000, n))
        g = torch.Generator().manual_seed(0)
        noise = (0.5 + 0.5 * torch.randn(real_shape(dataset, n), generator=g)).clamp(0, 1)
        rows["Gaussian noise (ceiling)"] = generation_scores(real, extractor.extract(noise),
                                                             kid_subset_size=min(1000, n))
        flat = {k: v for k, v in scores.items() if k != "n"}
        for tag, row in (("floor", rows.get("real train (floor)")), ("ceiling", rows["Gaussian noise (ceiling)"])):
            if row is not None:
                flat.update({f"fid_{tag}": row["fid"], f"kid_{tag}": row["kid"], f"is_{tag}": row["is"]})
        named = extractor.report_name
        return flat, {"extractor": named, "fid": f"FID-{named}", "samples": n, "rows": rows}

    def _samples(self, model: torch.nn.Module, n: int, info: dict[str, Any]
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """n samples (seed 0), classes in turn for a conditional model; cached for this model and n."""
        key = (id(model), n)
        cached = getattr(self, "_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        labels = None
        kwargs: dict[str, Any] = {}
        if getattr(model.config, "conditional", False):
            labels = torch.arange(n) % int(info["num_classes"])
            kwargs["labels"] = labels
        images = model.sample(n, generator=torch.Generator().manual_seed(0), **kwargs).cpu()
        self._cache = (key, (images, labels))
        return images, labels

    def test_report(self, run: RunReport) -> dict[str, Any]:
        from dlforge.runs.grids import save_grid

        model, plots, test = run.model, run.run_path / "plots", run.data.test
        if test is None or not len(test):
            return {}
        x = _images(test, min(SHOWN, len(test))).to(run.device)
        written = []
        with torch.no_grad():
            if hasattr(model, "encode") and hasattr(model, "decode"):
                recon = model.decode(model.encode(x))
                save_grid(torch.cat([x, recon]).cpu(), plots / "reconstructions.png", cols=len(x), scale=2)
                written.append("reconstructions.png")
            if hasattr(model, "sample"):
                g = torch.Generator().manual_seed(0)
                kwargs = {}
                if getattr(model.config, "conditional", False):  # a class per column
                    kwargs["labels"] = torch.arange(64) % min(int(run.data.info["num_classes"]), 8)
                save_grid(model.sample(64, generator=g, **kwargs).cpu(), plots / "samples.png", cols=8, scale=2)
                written.append("samples.png")
            if hasattr(model, "posterior"):
                save_grid(interpolations(model, x), plots / "interpolation.png", cols=10, scale=2)
                save_grid(latent_grid(model), plots / "latent_grid.png", cols=15, scale=2)
                written += ["interpolation.png", "latent_grid.png"]
        return {"plots": written}


def _iwae(model: torch.nn.Module, dataset: Any, info: dict[str, Any], options: dict[str, Any]
          ) -> tuple[dict[str, float], dict[str, Any]]:
    k = options["iwae_k"]
    n = min(options.get("iwae_images", 1000), len(dataset))
    x = _images(dataset, n)
    device = next(model.parameters()).device
    torch.manual_seed(0)  # the importance samples: the same figure on every call
    ll = torch.cat([model.log_likelihood(chunk.to(device), k).cpu() for chunk in x.split(50)])
    scores = {"nll_iwae": float(-ll.double().mean())}
    means = info.get("pixel_means")
    if means is not None:
        scores["nll_pixels"] = independent_pixels_nll(torch.tensor(means), x)
    return scores, {"iwae_k": k, "images": n}


def _images(dataset: Any, n: int) -> torch.Tensor:
    """The first n images (n, C, H, W) of a split."""
    return torch.stack([dataset[i]["x"] for i in range(n)])


def real_shape(dataset: Any, n: int) -> tuple[int, ...]:
    return (n, *dataset[0]["x"].shape)


def independent_pixels_nll(means: torch.Tensor, x: torch.Tensor) -> float:
    """The exact NLL in nats per image of images x (N, C, H, W) in [0, 1] under independent Bernoulli pixels with
    probabilities `means` (C, H, W), clamped away from 0 and 1."""
    p = means.double().clamp(1e-6, 1 - 1e-6)
    x = x.double()
    log_px = x * p.log() + (1 - x) * (1 - p).log()
    return float(-log_px.flatten(1).sum(dim=1).mean())


def interpolations(model: torch.nn.Module, x: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """Decoded straight walks between the posterior means of consecutive pairs of images: (pairs * steps, C, H, W)."""
    z = model.encode(x)
    pairs = [(z[i], z[i + 1]) for i in range(0, len(z) - 1, 2)]
    t = torch.linspace(0, 1, steps, device=z.device).view(-1, 1)
    walks = torch.cat([a + t * (b - a) for a, b in pairs])  # (pairs * steps, latent)
    return model.decode(walks).cpu()


def latent_grid(model: torch.nn.Module, side: int = 15) -> torch.Tensor:
    """The decoder over a side x side grid of the first two latent dimensions at the standard normal's quantiles
    (0.05..0.95), the other dimensions at 0: (side * side, C, H, W)."""
    device = next(model.parameters()).device
    q = torch.linspace(0.05, 0.95, side, dtype=torch.float64)
    values = (math.sqrt(2) * torch.erfinv(2 * q - 1)).float()  # the normal's quantiles
    z = torch.zeros(side * side, model.config.latent, device=device)
    rows, cols = torch.meshgrid(values, values, indexing="ij")
    z[:, 0] = rows.flatten().to(device)
    if model.config.latent > 1:
        z[:, 1] = cols.flatten().to(device)
    return model.decode(z).cpu()
