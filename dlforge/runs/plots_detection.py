"""Detections drawn over their images: each image twice, its true objects beside the predicted ones (boxes with
their class, and the score for predictions; masks as translucent colour), for a detector's test report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dlforge.runs.plots import _figure, _save, _show_image

MASK_ALPHA = 0.45


def plot_detections(images: np.ndarray, truths: list[dict[str, Any]], predictions: list[dict[str, Any]],
                    names: list[str], path: Path, title: str = "", max_images: int = 8) -> Path:
    """images (N, H, W, C) uint8; per image truths {"boxes" (n, 4) xyxy, "labels" (n,), optional "masks" (n, H, W)}
    and predictions (the same plus "scores"); one row of (truth, prediction) pairs per two images. Returns `path`."""
    n = min(len(images), max_images)
    cols = 4 if n > 1 else 2
    rows = max(1, -(-2 * n // cols))
    fig = _figure(2.2 * cols, 2.4 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False).flat
    colors = _palette(len(names))
    for ax in axes:
        ax.axis("off")
    for i in range(n):
        for j, (objects, kind) in enumerate(((truths[i], "true"), (predictions[i], "predicted"))):
            ax = axes[2 * i + j]
            _show_image(ax, images[i])
            _draw(ax, objects, names, colors)
            ax.set_title(f"{kind} ({len(objects['labels'])})", fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _draw(ax: Any, objects: dict[str, Any], names: list[str], colors: np.ndarray) -> None:
    from matplotlib.patches import Rectangle

    boxes, labels = np.asarray(objects["boxes"]), np.asarray(objects["labels"])
    scores = objects.get("scores")
    masks = objects.get("masks")
    for k in range(len(labels)):
        color = colors[int(labels[k]) % len(colors)]
        if masks is not None:
            overlay = np.zeros((*masks[k].shape, 4))
            overlay[np.asarray(masks[k], dtype=bool)] = (*color[:3], MASK_ALPHA)
            ax.imshow(overlay, interpolation="nearest")
        x1, y1, x2, y2 = (float(v) for v in boxes[k])
        # a box [x1, x2) x [y1, y2) covers pixels whose edges are at x1 - 0.5 ... x2 - 0.5 in imshow's coordinates
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor=color, lw=1.2))
        text = names[int(labels[k])] if 0 <= int(labels[k]) < len(names) else str(int(labels[k]))
        if scores is not None:
            text += f" {float(scores[k]):.2f}"
        ax.text(x1 - 0.5, y1 - 1.5, text, color="white", fontsize=5, va="bottom",
                bbox={"facecolor": color, "alpha": 0.8, "pad": 0.5, "lw": 0})


def _palette(n: int) -> np.ndarray:
    from matplotlib import colormaps

    return colormaps["tab10" if n <= 10 else "tab20"](np.arange(max(n, 1)) % (10 if n <= 10 else 20))
