"""`dlforge sample`: images from a generative run (a VAE, a GAN, a diffusion model), seeded and reproducible.

    summary = sample_run("runs/fashion-vae-...", n=64, seed=0, out="grid.png")       # one PNG grid
    summary = sample_run("runs/fashion-ddpm-...", n=100, steps=50, label="Sneaker", out="samples/")  # a PNG each

A model samples through `model.sample(n, generator=..., labels=..., steps=..., progress=...)`, each argument taken
only when the model's `sample` has it: `labels` (class ids, a class-conditional model), `steps` (a diffusion
model's sampling steps), `progress` (called with (done, total) on long sampling). The same run, n, seed, steps and
class give the same images.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any

import torch

from dlforge.errors import DlforgeError

DEFAULT_SEED = 0


def sample_run(run: str | Path, n: int = 64, out: str | Path = "samples.png", steps: int | None = None,
               seed: int = DEFAULT_SEED, label: str | None = None, device: str = "cpu",
               guidance: float | None = None) -> dict[str, Any]:
    """Draw `n` images from the run's model and write them to `out`: a .png grid, or a folder of one PNG each.
    Returns {"run", "n", "out", "files", "seed", "steps", "guidance", "class", "seconds", "images_per_s"}."""
    from dlforge.artifacts import load_trained
    from dlforge.paths import output_file, output_folder
    from dlforge.runs.grids import save_grid

    out = Path(out)
    grid = out.suffix.lower() == ".png"
    if grid:
        output_file(out, "the PNG grid to write the samples to (--out)")
    else:
        output_folder(out, "the folder to write one PNG per sample to (--out)")
    if n < 1:
        raise DlforgeError(f"--n: expected at least 1 sample, got {n}")
    model = load_trained(run, device=device)
    sample = getattr(model, "sample", None)
    if sample is None:
        raise DlforgeError(f"{run}: dlforge sample: a {model.registry_name} model does not sample; VAE, GAN and "
                           "diffusion runs do")
    accepts = set(inspect.signature(sample).parameters)
    kwargs: dict[str, Any] = {}
    if steps is not None:
        if "steps" not in accepts:
            raise DlforgeError(f"--steps: a {model.registry_name} model samples in one pass; --steps is for diffusion "
                               "models")
        kwargs["steps"] = steps
    if guidance is not None:
        if "guidance" not in accepts or not getattr(model.config, "conditional", False):
            raise DlforgeError(f"--guidance: the {model.registry_name} model of {run} has no classifier-free guidance; "
                               "class-conditional diffusion models do")
        if guidance < 0:
            raise DlforgeError(f"--guidance: expected a scale >= 0 (1: the conditional prediction), got {guidance}")
        kwargs["guidance"] = guidance
    class_id = None
    if label is not None:
        if "labels" not in accepts or not getattr(model.config, "conditional", False):
            raise DlforgeError(f"--class: the {model.registry_name} model of {run} is not class-conditional")
        class_id = _class_id(label, model.meta["extra"].get("data_info.json") or {})
        kwargs["labels"] = torch.full((n,), class_id, dtype=torch.long)
    shown = _Shown()
    if "progress" in accepts:
        kwargs["progress"] = shown
    started = time.perf_counter()
    try:
        images = sample(n, generator=torch.Generator().manual_seed(seed), **kwargs).cpu()  # (n, C, H, W) in [0, 1]
    finally:
        shown.close()
    seconds = time.perf_counter() - started
    if grid:
        save_grid(images, out, scale=2)
        files = [str(out)]
    else:
        out.mkdir(parents=True, exist_ok=True)
        files = [str(save_grid(images[i:i + 1], out / f"{i:05d}.png", cols=1, scale=1)) for i in range(n)]
    return {"run": str(run), "n": n, "out": str(out), "files": len(files), "seed": seed, "steps": steps,
            "guidance": guidance, "class": class_id, "seconds": round(seconds, 3),
            "images_per_s": round(n / max(seconds, 1e-9), 2)}


class _Shown:
    """The `progress` a model's sampling calls with (done, total): a `Progress` on stderr from the first call."""

    def __init__(self):
        self.progress: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.progress is None:
            from dlforge.runs.progress import Progress

            self.progress = Progress("sample", total=total, unit="steps")
        self.progress.update(done)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()


def _class_id(label: str, info: dict[str, Any]) -> int:
    """A class given by name or id, checked against the run's class names."""
    names = [str(name) for name in info.get("label_names") or []]
    if label in names:
        return names.index(label)
    if label.isdigit() and int(label) < len(names):
        return int(label)
    raise DlforgeError(f"--class: unknown class {label!r}; expected a name ({', '.join(names)}) or an id 0.."
                       f"{len(names) - 1}")
