"""Image grids as PNG files: generated samples, reconstructions, latent walks (no axes, one pixel per pixel)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def tile(images: torch.Tensor, cols: int | None = None, pad: int = 2, scale: int = 1) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] -> one uint8 picture (rows * (H + pad) + pad, ..., C) of them in rows of
    `cols` (default: a square), on a gray background, each pixel repeated `scale` times in both directions."""
    x = images.detach().float().clamp(0, 1).cpu()
    if scale > 1:
        x = x.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    n, c, h, w = x.shape
    cols = cols or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    canvas = torch.full((c, rows * (h + pad) + pad, cols * (w + pad) + pad), 0.5)
    for i in range(n):
        r, k = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        canvas[:, top:top + h, left:left + w] = x[i]
    return (canvas.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def save_grid(images: torch.Tensor, path: Path, cols: int | None = None, scale: int = 1) -> Path:
    """`tile` the images and write them as a PNG (grayscale when C == 1); returns `path`."""
    from matplotlib.image import imsave

    picture = tile(images, cols, scale=scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    if picture.shape[2] == 1:
        imsave(path, picture[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        imsave(path, picture)
    return path
