"""PNG plots of a run: loss, learning rate, eval metrics, a confusion matrix, images, segmentation maps, attention over
an image, and several runs side by side.

Figures are drawn with matplotlib's Agg canvas on `matplotlib.figure.Figure` objects, not through pyplot: no
display is needed, no global backend is switched under a user's notebook, and no figure stays open afterwards.
matplotlib is imported inside the functions, so importing `dlforge.runs` stays cheap.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlforge.errors import DlforgeError
from dlforge.runs.rundir import METRICS_FILE, read_metrics, reporting_full_disk

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MANY_PANELS = 9  # metrics.png: above this many panels, a fixed grid instead of constrained layout
TRAIN_LOSS = "loss"  # the key of the training loss in metrics.jsonl; eval losses are "<split>/loss"


# --- reading the log --------------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of every row that has a numeric `key` and a step."""
    steps, values = [], []
    for row in rows:
        if _is_number(row.get(key)) and _is_number(row.get("step")):
            steps.append(row["step"])
            values.append(row[key])
    return steps, values


def _split_rows(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Training rows (no `split`) and evaluation rows (with one)."""
    train = [r for r in rows if "split" not in r]
    evals = [r for r in rows if "split" in r]
    return train, evals


def _eval_keys(evals: list[dict[str, Any]]) -> list[str]:
    """Numeric '<split>/<metric>' keys of the evaluation rows, in order of first appearance."""
    keys: dict[str, None] = {}
    for row in evals:
        prefix = f"{row['split']}/"
        keys.update(dict.fromkeys(k for k, v in row.items() if k.startswith(prefix) and _is_number(v)))
    return list(keys)


def _load(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    return read_metrics(path) if path.is_file() else []


# --- drawing ----------------------------------------------------------------------------------------------------


def _figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with reporting_full_disk(path):
        fig.savefig(path, dpi=100)
    return path


def _steps_axis(ax: Axes) -> None:
    """Whole steps on the x axis: a run of a few steps gets ticks 1, 2, 3, not 4.96, 4.98, 5.00."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def _line_style(steps: list[float]) -> dict[str, Any]:
    """A line, with markers where the points are few enough to be seen one by one (a single point included)."""
    return {"lw": 1, "marker": "o" if len(steps) <= 20 else None, "ms": 3}


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def plot_run(run_dir: Path) -> list[Path]:
    """Plot `run_dir/metrics.jsonl` into `run_dir/plots/`; returns the files written.

    loss.png: training loss against step, with each split's eval loss as points. lr.png: learning rate.
    metrics.png: one panel per eval metric other than loss, a line per split. A plot without data is skipped.
    """
    run_dir = Path(run_dir)
    train, evals = _split_rows(_load(run_dir))
    eval_keys = _eval_keys(evals)
    out = run_dir / "plots"
    written = []

    loss_keys = [k for k in eval_keys if k.endswith("/loss")]
    steps, losses = _series(train, TRAIN_LOSS)
    if steps or loss_keys:
        fig = _figure(7, 4.5)
        ax = fig.subplots()
        if steps:
            ax.plot(steps, losses, label="train", **_line_style(steps))
        for key in loss_keys:
            ax.plot(*_series(evals, key), "o-", ms=4, label=key.split("/")[0])
        ax.set(ylabel="loss", title="loss")
        _steps_axis(ax)
        ax.grid(alpha=0.3)
        ax.legend()
        written.append(_save(fig, out / "loss.png"))

    steps, lrs = _series(train, "lr")
    if steps:
        fig = _figure(7, 3.5)
        ax = fig.subplots()
        ax.plot(steps, lrs, **_line_style(steps))
        ax.set(ylabel="learning rate", title="learning rate")
        _steps_axis(ax)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.grid(alpha=0.3)
        written.append(_save(fig, out / "lr.png"))

    # One panel per metric name ("accuracy"), a line per split ("val/accuracy", "test/accuracy").
    panels: dict[str, list[str]] = {}
    for key in eval_keys:
        if key not in loss_keys:
            panels.setdefault(key.split("/", 1)[1], []).append(key)
    if panels:
        rows, cols = _grid(len(panels))
        # Many panels (COCO's 12 figures, twice with masks): a fixed grid, as constrained layout's text measuring
        # costs seconds per dozen panels; panels of equal size need no per-panel margins.
        many = len(panels) > MANY_PANELS
        fig = _figure(4.5 * cols, 3.5 * rows, layout=None if many else "constrained")
        if many:
            fig.subplots_adjust(left=0.07, right=0.98, bottom=0.5 / (3.5 * rows), top=1 - 0.4 / (3.5 * rows),
                                wspace=0.25, hspace=0.45)
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        for ax, (metric, keys) in zip(axes, panels.items(), strict=False):
            for key in keys:
                ax.plot(*_series(evals, key), "o-", ms=4, label=key.split("/")[0])
            _steps_axis(ax)
            ax.grid(alpha=0.3)
            if len(keys) > 1:
                ax.set(title=metric)
                ax.legend()
            else:  # one split: its name in the title (a legend of one line is slow to place, and says no more)
                ax.set(title=f"{metric} ({keys[0].split('/')[0]})")
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        written.append(_save(fig, out / "metrics.png"))
    return written


def plot_scores(scores: dict[str, dict[str, float]], path: Path, title: str = "") -> Path:
    """Final scores as bars, a panel per metric and a bar per split: `{"val": {"bleu": 21.3, "chrf": 48.0},
    "test": {...}}` (scores measured once, at the end, such as BLEU and chrF); returns `path`."""
    metrics = list(dict.fromkeys(k for values in scores.values() for k, v in values.items() if _is_number(v)))
    if not metrics:
        raise DlforgeError(f"plot_scores: no numeric score to plot for {', '.join(scores) or 'no split'}")
    rows, cols = _grid(len(metrics), max_cols=4)
    fig = _figure(2.8 * cols + 0.4, 2.8 * rows + (0.5 if title else 0))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, metric in zip(axes, metrics, strict=False):
        splits = [s for s, values in scores.items() if _is_number(values.get(metric))]
        bars = ax.bar(splits, [scores[s][metric] for s in splits], color=[f"C{i}" for i in range(len(splits))])
        ax.bar_label(bars, fmt="%.4g", fontsize=8)
        ax.set(title=metric)
        ax.margins(y=0.15)
        ax.grid(alpha=0.3, axis="y")
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_confusion_matrix(matrix: list[list[int]], labels: list[str], path: Path, title: str = "") -> Path:
    """Draw `matrix[true][predicted]` as a heat map with the count written in each cell; returns `path`."""
    return _save(_confusion_figure(matrix, labels, title), path)


def _confusion_figure(matrix: list[list[int]], labels: list[str], title: str) -> Figure:
    n = len(labels)
    if len(matrix) != n or any(len(row) != n for row in matrix):
        shape = f"{len(matrix)}x{len(matrix[0]) if matrix else 0}"
        raise ValueError(f"confusion matrix is {shape} but there are {n} labels; expected {n}x{n}")
    size = max(4.0, 0.6 * n + 2)
    fig = _figure(size + 1, size)  # the colorbar's inch on the right
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8)
    top = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            color = "white" if count > top / 2 else "black"  # readable on dark and light cells
            ax.text(j, i, str(count), ha="center", va="center", color=color, fontsize=9)
    ax.set_xticks(range(n), labels, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_yticks(range(n), labels)
    ax.set(xlabel="predicted", ylabel="true")
    if title:  # above the colorbar too: a title wider than the matrix would run under it
        fig.suptitle(title)
    return fig


def plot_image_grid(images: Any, titles: list[str], path: Path, title: str = "", max_cols: int = 8) -> Path:
    """Images (N, H, W, C) uint8, one captioned cell each, in a grid; returns `path`. Grayscale when C == 1."""
    n = len(images)
    if n != len(titles):
        raise ValueError(f"{n} images but {len(titles)} titles")
    rows, cols = _grid(max(n, 1), max_cols)
    fig = _figure(1.6 * cols, 1.8 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            _show_image(ax, images[i])
            ax.set_title(titles[i], fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_segmentation(images: Any, true: Any, pred: Any, names: list[str], colors: Any, path: Path,
                      title: str = "") -> Path:
    """A row per image: the image (N, H, W, C) uint8, its true and its predicted class maps (N, H, W), each class in
    its colour (`colors`, (K, 3) uint8, class k = names[k]), ignored pixels (< 0) in light gray, and a legend of the
    classes; returns `path`."""
    import numpy as np
    from matplotlib.patches import Patch

    palette = np.concatenate([np.asarray(colors, dtype=np.uint8), [[224, 224, 224]]])  # the last: ignored pixels
    n = len(images)
    fig = _figure(5.4, 1.7 * max(n, 1) + 0.9)
    axes = fig.subplots(max(n, 1), 3, squeeze=False)
    for i, row in enumerate(axes):
        for j, ax in enumerate(row):
            ax.axis("off")
            if i >= n:
                continue
            if j == 0:
                _show_image(ax, images[i])
            else:
                maps = np.asarray(true[i] if j == 1 else pred[i])
                ax.imshow(palette[np.where(maps < 0, len(palette) - 1, maps)], interpolation="nearest")
            if i == 0:
                ax.set_title(("image", "true", "predicted")[j], fontsize=9)
    handles = [Patch(facecolor=palette[k] / 255, edgecolor="black", linewidth=0.3, label=name)
               for k, name in enumerate(names)]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_attention(image: Any, heat: Any, path: Path, title: str = "") -> Path:
    """An image (H, W, C) uint8 beside the same image under a heat map (h, w) in [0, 1], each cell of the map
    stretched over its H/h x W/w block of pixels (a ViT's patch); returns `path`."""
    height, width = image.shape[:2]
    fig = _figure(6.4, 3.6)
    left, right = fig.subplots(1, 2)
    for ax, name in ((left, "image"), (right, "attention")):
        _show_image(ax, image)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    shown = right.imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear",
                         extent=(-0.5, width - 0.5, height - 0.5, -0.5))  # the pixels' edges, top row first
    fig.colorbar(shown, ax=right, shrink=0.8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _show_image(ax: Any, img: Any) -> None:
    """Draw uint8 pixels (H, W, C) on `ax`: grayscale when C == 1."""
    gray = img.shape[-1] == 1
    ax.imshow(img[..., 0] if gray else img, cmap="gray" if gray else None, vmin=0, vmax=255)


def plot_compare(runs: list[tuple[str, Path]], path: Path, keys: list[str] | None = None) -> Path:
    """Overlay several runs' curves in one PNG, a panel per key and a line per run; returns `path`.

    `runs` is (name shown in the legend, run folder). `keys` defaults to the training loss (`loss`) and every eval
    metric (`val/accuracy`, ...) that all the runs logged.
    """
    if not runs:
        raise DlforgeError("plot_compare: no runs given")
    loaded = []
    for name, run_dir in runs:
        train, evals = _split_rows(_load(run_dir))
        loaded.append((name, train, evals, _eval_keys(evals)))

    if keys is None:
        common = [k for k in loaded[0][3] if all(k in run[3] for run in loaded)]
        has_loss = any(_series(run[1], TRAIN_LOSS)[0] for run in loaded)
        keys = ([TRAIN_LOSS] if has_loss else []) + common
        if not keys:
            raise DlforgeError(f"plot_compare: runs {', '.join(r[0] for r in runs)} have no metric in common")
    else:
        known = {TRAIN_LOSS}.union(*(run[3] for run in loaded))
        unknown = [k for k in keys if k not in known]
        if unknown:
            raise DlforgeError(f"plot_compare: no run logged {', '.join(unknown)}; known: {', '.join(sorted(known))}")

    from matplotlib.lines import Line2D

    rows, cols = _grid(len(keys))
    fig = _figure(4.5 * cols, 3.5 * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    colors = [f"C{i % 10}" for i in range(len(loaded))]
    for ax, key in zip(axes, keys, strict=False):
        for color, (name, train, evals, _) in zip(colors, loaded, strict=True):
            if key == TRAIN_LOSS:
                ax.plot(*_series(train, key), lw=1, color=color, label=name)
            else:
                ax.plot(*_series(evals, key), "o-", ms=3, color=color, label=name)
        ax.set(title="train loss" if key == TRAIN_LOSS else key)
        _steps_axis(ax)
        ax.grid(alpha=0.3)
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    # Proxy lines, so a run missing from the first panel still gets its legend entry.
    handles = [Line2D([], [], color=color, label=name) for color, (name, *_) in zip(colors, loaded, strict=True)]
    fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 4))
    return _save(fig, path)


def plot_lr_range(lrs: list[float], losses: list[float], smoothed: list[float], suggestion: float | None,
                  path: Path) -> Path:
    """The learning-rate range test (`dlforge lr-find`): loss against learning rate on a log axis, raw and
    smoothed, with the suggested rate marked; returns `path`."""
    fig = _figure(6.5, 4.2)
    ax = fig.subplots()
    finite = [(lr, s) for lr, s in zip(lrs, smoothed, strict=True) if math.isfinite(s)]
    ax.plot(lrs, losses, lw=0.8, alpha=0.35, color="C0", label="loss")
    if finite:
        ax.plot([lr for lr, _ in finite], [s for _, s in finite], lw=1.6, color="C0", label="smoothed")
        low, high = min(s for _, s in finite), finite[0][1]
        margin = high - low + 1e-12
        ax.set_ylim(low - 0.1 * margin, high + 0.5 * margin)  # the diverging tail would squash the rest
    if suggestion is not None:
        ax.axvline(suggestion, color="C3", ls="--", lw=1, label=f"suggestion {suggestion:.2g}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", title="learning-rate range test")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return _save(fig, path)
