"""Where a Vision Transformer looks: attention rollout, and a trained run's attention drawn over an image.

    dlforge image attention RUN image.png --out runs/attention.png [--method rollout|last]

The model gives every block's attention probabilities (`model.attention_maps(images)` -> (B, heads, T, T) per block,
the ViT's); the image is prepared as the run's training images were. Two readings, heads averaged:

    rollout   Abnar & Zuidema 2020, "Quantifying attention flow in transformers": each block's attention with its
              residual connection, 0.5 A + 0.5 I, multiplied from the first block to the last: how much of each
              input token reaches each output token
    last      the last block's attention alone

The heat map is the row of the token the head reads (the class token; with mean pooling, the mean of every row) over
the patch tokens, on the grid of patches, scaled so that its largest cell is 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dlforge.errors import ConfigError, DataError

METHODS = ("rollout", "last")


def check_method(method: str) -> None:
    """A ConfigError naming --method unless `method` is one of METHODS."""
    if method not in METHODS:
        raise ConfigError(f"--method: expected {' or '.join(METHODS)}, got {method!r}")


def attention_rollout(maps: list[torch.Tensor], residual: float = 0.5) -> torch.Tensor:
    """Per-block attention (B, heads, T, T), first block first -> the rollout (B, T, T): row i says how much of each
    input token flows into token i after the last block. Every row sums to 1."""
    flow = None
    for attn in maps:
        a = attn.mean(dim=1)  # (B, T, T): the heads averaged
        a = residual * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device) + (1 - residual) * a  # the skip path
        flow = a if flow is None else a @ flow
    if flow is None:
        raise ValueError("attention_rollout: no attention maps given")
    return flow


def patch_heat(maps: list[torch.Tensor], prefix: int, grid: tuple[int, int], method: str = "rollout"
               ) -> torch.Tensor:
    """Attention maps -> heat (B, rows, cols) on the grid of patches, the largest cell of each image 1.

    `prefix` tokens come before the patches (1: a class token, whose row is read; 0: the mean of the rows)."""
    check_method(method)
    flow = attention_rollout(maps) if method == "rollout" else maps[-1].mean(dim=1)  # (B, T, T)
    row = flow[:, 0] if prefix else flow.mean(dim=1)  # (B, T): what the pooled token reads
    heat = row[:, prefix:].reshape(-1, *grid)
    return heat / heat.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)


def check_output(out: str | Path) -> Path:
    """`out` if a PNG can be written there: a .png name, not a folder, in a folder that exists."""
    out = Path(out)
    if out.is_dir():
        raise DataError(f"{out}: is a folder; expected the PNG file to write (--out)")
    if out.suffix.lower() != ".png":
        raise DataError(f"{out}: expected the PNG file to write (--out), a .png file")
    if not out.parent.is_dir():
        raise DataError(f"{out}: the folder {out.parent} does not exist")
    return out


def attention_overlay(run: str | Path, image_path: str | Path, out: str | Path, method: str = "rollout",
                      runs_dir: str | Path = "runs") -> dict[str, Any]:
    """Draw where a trained ViT (a run, its name, 'latest' or a model folder) attends in one image: a PNG of the image
    beside the image under its heat map, written to `out` (replaced if it exists, as `image ops` replaces its output).
    Returns what was done: model folder, prediction, grid, output path."""
    from dlforge.artifacts import load_trained
    from dlforge.data.images import denormalize, prepare_images
    from dlforge.layers.losses import to_probabilities
    from dlforge.runs.plots import plot_attention
    from dlforge.runs.rundir import model_dir

    check_method(method)  # like the output, before any work
    out = check_output(out)
    folder = model_dir(run, runs_dir)
    model = load_trained(folder)
    if not hasattr(model, "attention_maps"):
        raise ConfigError(f"{folder}: model {model.registry_name!r} has no attention maps; `image attention` reads "
                          "a Vision Transformer (vit, vit_tiny)")
    pre = model.meta["extra"].get("preprocessing.json") or {}
    if pre.get("kind") != "image":
        raise DataError(f"{folder}: the model was not trained on images (no image preprocessing.json)")
    x = prepare_images(pre, [Path(image_path)])  # (1, C, H, W), as the training images
    with torch.no_grad():
        maps = model.attention_maps(x)
        probs = to_probabilities(model({"x": x}).logits, model.config.loss)[0]
    p = model.config.patch_size
    grid = (x.shape[-2] // p, x.shape[-1] // p)
    heat = patch_heat(maps, model.num_prefix_tokens, grid, method)[0]
    label = pre["label_names"][int(probs.argmax())]
    title = f"{Path(image_path).name}: {label} ({probs.max():.2f}), attention {method}"
    plot_attention(denormalize(pre, x)[0].numpy(), heat.numpy(), out, title=title)
    return {"model": str(folder), "image": str(image_path), "out": str(out), "method": method, "prediction": label,
            "probability": round(float(probs.max()), 6), "grid": list(grid)}
