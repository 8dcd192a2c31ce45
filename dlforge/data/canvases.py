"""Fashion-MNIST canvases: detection and segmentation data made of real items, with exact labels.

    data: {name: fashion_canvases, task: detection}                      # 96x96, 1-4 items
    data: {name: fashion_canvases, task: segmentation, items: [1, 3]}    # 64x64
    data: {name: fashion_canvases, task: instance_segmentation, background: textured, n_train: 20000}
    data: {name: fashion_canvases, task: detection, augment: {hflip: 0.5}}   # mirrored with their boxes and masks

A canvas (64x64 for segmentation, 96x96 otherwise, or `size`) holds `items` Fashion-MNIST items drawn from the
matching split: training canvases from the training items, validation canvases from 5,000 training items set aside
for them (never in a training canvas), test canvases from the test items. Each item is scaled by a random factor
in `scale` (0.8-2.5x of 28 pixels, at most the canvas side), and placed at a random position where it hides at most
`max_overlap` of any item under it (up to 20 tries, else the item is left out); later items lie on top. The
background is plain (one gray level in 0-60) or a random crop of scikit-image's brick, grass or gravel texture,
dimmed to half its contrast so that the items stand out; `mixed` picks either with equal odds.

The labels are exact because the pixels are: an item's pixels are its resized Fashion-MNIST pixels brighter than
16 (holes inside filled), pasted as they are over the background. The item on top owns a pixel, so:

- the semantic map is 0 for background and k + 1 for an item of class k (Fashion-MNIST's 0..9: 1..10);
- each item's instance mask is the set of pixels it owns; an item hidden entirely is dropped;
- its box is the tight box of those pixels, [x1, x2) x [y1, y2) in pixels, and its area their count.

Everything follows from `seed` and the settings, so the canvases are generated once and cached as a compressed
.npz in `cache_dir` (default ~/.cache/dlforge/datasets), keyed by a hash of both. `export_coco` writes them as a
COCO dataset (PNG images + instances_{split}.json with boxes, RLE masks, areas, categories), which any COCO tool reads.
Batches follow `dlforge.data.detection`: x, y, boxes, labels, box_mask, iscrowd, area, and masks when `masks` is on
(default: for instance_segmentation). The run's final evaluation of the training split scores its first
`eval_train` canvases (2,000 by default: scoring 20,000 detection canvases would take minutes and say no more).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from dlforge.config import DataConfig
from dlforge.data import rle
from dlforge.data.augment import AugmentConfig, BatchAugment
from dlforge.data.coco import write_coco
from dlforge.data.dataset import DataBundle, default_cache_dir, fingerprint_tensors
from dlforge.data.detection import DetectionDataset, Objects
from dlforge.data.idx import read_idx
from dlforge.data.imagefiles import resize_images
from dlforge.data.images import FASHION_DIR, FASHION_FILES, FASHION_LABELS, channel_stats
from dlforge.errors import ConfigError, DataError, warn
from dlforge.registry import register_dataset
from dlforge.runs.rundir import atomic_write_bytes

CANVAS_FORMAT = 1  # part of the cache key: bump it when the generator changes what a seed gives
ITEM_SIDE = 28  # Fashion-MNIST items are 28x28
ITEM_THRESHOLD = 16  # an item's pixels: resized values above this (fainter ones are invisible on any background)
PLAIN_LEVELS = (0, 60)  # a plain background is one gray level in this range
TEXTURE_GAIN = 0.5  # textures are dimmed to this share of their contrast
TEXTURES = ("brick", "grass", "gravel")  # scikit-image's bundled textures
TEXTURE_SIDE = 512
PLACEMENT_TRIES = 20
VAL_ITEMS = 5000  # training items set aside for the validation canvases
SPLITS = ("train", "val", "test")
CACHED = ("images", "instances", "count", "labels", "boxes", "area")  # what the cache holds of each split


class CanvasConfig(DataConfig):
    """Fashion-MNIST canvases for detection, semantic and instance segmentation."""

    task: Literal["detection", "segmentation", "instance_segmentation"] = "detection"
    size: int | list[int] | None = Field(None, description="canvas side or [height, width]; default 64 for "
                                         "segmentation, 96 otherwise")
    items: list[int] = Field([1, 4], description="[min, max] items per canvas")
    scale: list[float] = Field([0.8, 2.5], description="[min, max] scale of the 28-pixel items")
    max_overlap: float = Field(0.3, ge=0, le=1, description="the largest share of an item that later items may hide "
                               "(1: any, an item hidden entirely is dropped)")
    background: Literal["plain", "textured", "mixed"] = "mixed"
    textures: list[Literal["brick", "grass", "gravel"]] = Field(list(TEXTURES), min_length=1)
    n_train: int = Field(10000, ge=1)
    n_val: int = Field(1000, ge=0)
    n_test: int = Field(2000, ge=0)
    seed: int = 0
    masks: bool | None = Field(None, description="instance masks in the batches (default: for instance_segmentation)")
    augment: AugmentConfig | None = Field(None, description="augmentation of training batches: hflip only (the "
                                          "images are mirrored with their boxes and masks)")
    eval_train: int | None = Field(2000, ge=1, description="the final evaluation scores the first N training canvases "
                                   "(a sample of the fit, at a test split's cost); null: all of them")
    path: str | None = Field(None, description="folder of the Fashion-MNIST IDX files (default: the Debian package's)")
    cache_dir: str | None = Field(None, description="where the generated canvases are cached (default "
                                  "~/.cache/dlforge/datasets)")

    @model_validator(mode="after")
    def _check(self) -> CanvasConfig:
        for key, pair, low in (("items", self.items, 1), ("scale", self.scale, 0)):
            if len(pair) != 2 or pair[0] > pair[1] or pair[0] < low or (key == "scale" and pair[0] == 0):
                raise ConfigError(f"data.{key}: expected [min, max] with {low} {'<' if key == 'scale' else '<='} "
                                  f"min <= max, got {pair}")
        if self.size is not None:
            sides = [self.size] if isinstance(self.size, int) else self.size
            if len(sides) not in (1, 2) or min(sides) < 8:
                raise ConfigError(f"data.size: expected a side or [height, width] of at least 8, got {self.size}")
        if self.augment is not None and (self.augment.crop_padding or self.augment.erasing):
            key = "crop_padding" if self.augment.crop_padding else "erasing"
            raise ConfigError(f"data.augment.{key}: would move or hide what the boxes and masks mark; canvases take "
                              "augment.hflip only")
        if self.background != "plain" and max(self.canvas_size()) > TEXTURE_SIDE:
            raise ConfigError(f"data.size: textured backgrounds are crops of {TEXTURE_SIDE}-pixel textures; got "
                              f"{self.size}")
        return self

    def canvas_size(self) -> tuple[int, int]:
        if self.size is None:
            side = 64 if self.task == "segmentation" else 96
            return side, side
        sides = [self.size] if isinstance(self.size, int) else self.size
        return sides[0], sides[-1]

    def with_masks(self) -> bool:
        return self.task == "instance_segmentation" if self.masks is None else self.masks


@dataclass
class Canvases:
    """One split: images, semantic and instance maps (N, H, W) uint8 (instance k = the canvas's k-th object,
    0 = background), and the objects: per canvas `count`, and per object (canvas by canvas) label, box, area."""

    images: np.ndarray
    semantic: np.ndarray
    instances: np.ndarray
    count: np.ndarray  # (N,) int64
    labels: np.ndarray  # (T,) int64, Fashion-MNIST class 0..9
    boxes: np.ndarray  # (T, 4) float32 xyxy
    area: np.ndarray  # (T,) float32

    @classmethod
    def from_arrays(cls, images: np.ndarray, instances: np.ndarray, count: np.ndarray, labels: np.ndarray,
                    boxes: np.ndarray, area: np.ndarray) -> Canvases:
        """Canvases from what the cache holds: the semantic map follows from the instance map and the labels."""
        semantic = np.zeros_like(instances)
        start = 0
        for i, n in enumerate(count):
            semantic_of = np.concatenate([[0], labels[start:start + n] + 1]).astype(np.uint8)  # instance -> id
            semantic[i] = semantic_of[instances[i]]
            start += n
        return cls(images, semantic, instances, count, labels, boxes, area)

    def objects(self, masks: bool) -> Objects:
        """The canvases' objects for `DetectionDataset` (iscrowd all False), with mask runs if asked."""
        runs = None
        if masks:
            runs = [rle.mask_runs(self.instances[i] == k + 1) for i, n in enumerate(self.count) for k in range(n)]
        start = np.concatenate([[0], np.cumsum(self.count)]).astype(np.int64)
        return Objects(start, self.boxes, self.labels, np.zeros(len(self.labels), dtype=bool), self.area, runs)


# --- the registered dataset -------------------------------------------------------------------------------------


@register_dataset(CanvasConfig)
def fashion_canvases(config: CanvasConfig) -> DataBundle:
    """Fashion-MNIST items on 64x64 / 96x96 canvases: boxes, semantic and instance masks, exact from the pixels."""
    splits = load_canvases(config)
    mean, std = channel_stats(splits["train"].images[..., None])
    masks = config.with_masks()
    datasets = {name: DetectionDataset(c.images[..., None], mean, std, c.objects(masks), c.semantic, masks=masks)
                if len(c.images) else None for name, c in splits.items()}
    h, w = config.canvas_size()
    k = len(FASHION_LABELS)
    segment_names = ["background", *FASHION_LABELS]
    info = {"task": config.task, "num_classes": k, "label_names": FASHION_LABELS, "segment_names": segment_names,
            "modality": "image", "image_shape": [1, h, w], "max_objects": config.items[1], "masks": masks,
            "source": f"fashion-mnist canvases ({config.background} background)",
            **{f"n_{name}": len(c.images) for name, c in splits.items()}}
    preprocessing = {"kind": "image", "task": config.task, "mean": mean, "std": std, "channels": 1,
                     "image_size": [h, w], "input_mode": "L", "input_size": [h, w], "ops": [],
                     "label_names": FASHION_LABELS, "segment_names": segment_names}
    train = datasets["train"]
    eval_train = None
    if config.eval_train is not None and config.eval_train < len(train):
        eval_train = torch.utils.data.Subset(train, range(config.eval_train))
        info["n_eval_train"] = config.eval_train
    augment = BatchAugment(config.augment) if config.augment is not None else None
    blobs = [torch.from_numpy(np.ascontiguousarray(a)) for c in splits.values()
             for a in (c.images, c.instances, c.labels, c.boxes)]
    return DataBundle(
        datasets["train"], datasets["val"], datasets["test"], info=info,
        model_defaults={"in_channels": 1, "image_size": h if h == w else [h, w],
                        "num_classes": k + 1 if config.task == "segmentation" else k},
        preprocessing=preprocessing,
        fingerprint=fingerprint_tensors(*blobs),
        augment=augment,
        eval_train=eval_train,
    )


def export_coco(config: CanvasConfig, folder: str | Path, splits: tuple[str, ...] = SPLITS) -> list[Path]:
    """Write the canvases of `splits` as a COCO dataset in `folder`: {split}/000001.png ... and
    instances_{split}.json (category id = class + 1, RLE masks). Returns the JSON files written."""
    data = load_canvases(config)
    written = []
    for split in splits:
        c = data[split]
        written.append(write_coco(folder, split, c.images[..., None], c.objects(masks=True), FASHION_LABELS))
    return written


# --- cache ------------------------------------------------------------------------------------------------------


def load_canvases(config: CanvasConfig) -> dict[str, Canvases]:
    """The canvases of every split: read from the cache, or generated and cached. With `limit`, only that many
    canvases are made per split (a smoke run's: the same recipe, seconds instead of a minute of generating)."""
    if config.limit is not None:
        config = config.model_copy(update={f"n_{s}": min(getattr(config, f"n_{s}"), config.limit) for s in SPLITS})
    folder = Path(config.path) if config.path else FASHION_DIR
    files = {s: (folder / images, folder / labels) for s, (images, labels) in FASHION_FILES.items()}
    missing = [p for pair in files.values() for p in pair if not p.is_file()]
    if missing:
        raise DataError(f"{missing[0]}: Fashion-MNIST not found; install the Debian package dataset-fashion-mnist "
                        f"(apt-get install dataset-fashion-mnist) or set data.path")
    path = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
    path = path / f"fashion-canvases-{_cache_key(config, files)}.npz"
    cached = _read_cache(path)
    if cached is not None:
        return cached
    splits = generate_splits(config, files)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, _npz({f"{s}_{k}": getattr(c, k) for s, c in splits.items() for k in CACHED}))
    return splits


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz (np.load reads it) deflated at level 1: the masks shrink as much as at numpy's level, 3x faster."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, array in arrays.items():
            with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _cache_key(config: CanvasConfig, files: dict[str, tuple[Path, Path]]) -> str:
    not_drawn = {"name", "num_workers", "limit", "task", "masks", "path", "cache_dir", "augment", "eval_train"}
    settings = config.model_dump(exclude=not_drawn)  # the settings that change what is drawn
    settings["size"] = list(config.canvas_size())
    sources = {s: [p.stat().st_size for p in pair] for s, pair in files.items()}
    blob = json.dumps({"format": CANVAS_FORMAT, "settings": settings, "sources": sources}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read_cache(path: Path) -> dict[str, Canvases] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {s: Canvases.from_arrays(**{k: z[f"{s}_{k}"] for k in CACHED}) for s in SPLITS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        warn(f"{path}: unreadable canvas cache ({exc}); generating the canvases again")
        return None


# --- generation -------------------------------------------------------------------------------------------------


def generate_splits(config: CanvasConfig, files: dict[str, tuple[Path, Path]]) -> dict[str, Canvases]:
    """Every split's canvases: train and val from disjoint training items, test from the test items."""
    textures = _textures(config)
    train_x, train_y = (read_idx(p) for p in files["train"])
    test_x, test_y = (read_idx(p) for p in files["test"])
    held = np.zeros(len(train_y), dtype=bool)
    held[np.random.default_rng([config.seed, 99]).permutation(len(train_y))[:VAL_ITEMS]] = True
    pools = {"train": (train_x[~held], train_y[~held]), "val": (train_x[held], train_y[held]),
             "test": (test_x, test_y)}
    counts = {"train": config.n_train, "val": config.n_val, "test": config.n_test}
    return {s: generate(*pools[s], counts[s], config, textures, np.random.default_rng([config.seed, i]))
            for i, s in enumerate(SPLITS)}


def _textures(config: CanvasConfig) -> list[np.ndarray]:
    if config.background == "plain":
        return []
    try:
        from skimage import data as skdata
    except ImportError:
        raise DataError("textured canvas backgrounds need scikit-image (its bundled brick, grass and gravel "
                        "textures): pip install scikit-image (or 'dlforge[images]'), or set data.background: "
                        "plain") from None
    return [np.asarray(getattr(skdata, name)(), dtype=np.float64) for name in config.textures]


def generate(items: np.ndarray, item_labels: np.ndarray, n: int, config: CanvasConfig, textures: list[np.ndarray],
             rng: np.random.Generator) -> Canvases:
    """`n` canvases from the items (P, 28, 28) uint8 of classes `item_labels` (P,), drawn with `rng`."""
    h, w = config.canvas_size()
    counts = rng.integers(config.items[0], config.items[1] + 1, size=n)
    chosen = rng.integers(0, len(items), size=int(counts.sum()))
    sides = np.clip(np.round(ITEM_SIDE * rng.uniform(*config.scale, size=len(chosen))), 1, min(h, w)).astype(int)
    pixels, shapes = _scaled_items(items[chosen], sides)
    images = np.zeros((n, h, w), dtype=np.uint8)
    instances = np.zeros_like(images)
    labels, boxes, areas, kept = [], [], [], np.zeros(n, dtype=np.int64)
    first = 0
    for i, count in enumerate(counts):
        images[i] = _background(config.background, textures, h, w, rng)
        placed: list[int] = []  # the items drawn, bottom to top
        for j in range(first, first + count):
            spot = _place(shapes[j], instances[i], [shapes[p] for p in placed], config.max_overlap, rng)
            if spot is not None:
                window = (slice(spot[0], spot[0] + sides[j]), slice(spot[1], spot[1] + sides[j]))
                images[i][window][shapes[j]] = pixels[j][shapes[j]]  # the item on top owns the pixel
                instances[i][window][shapes[j]] = len(placed) + 1
                placed.append(j)
        first += count
        for k, p in enumerate(_drop_hidden(instances[i], len(placed))):
            ys, xs = np.nonzero(instances[i] == k + 1)
            labels.append(item_labels[chosen[placed[p]]])
            boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
            areas.append(len(ys))
            kept[i] += 1
    return Canvases.from_arrays(images, instances, kept, np.asarray(labels, dtype=np.int64),
                                np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                                np.asarray(areas, dtype=np.float32))


def _scaled_items(items: np.ndarray, sides: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each item resized to its side (antialiased bilinear) and its shape: the pixels above ITEM_THRESHOLD with the
    holes inside filled (background not 4-connected to the border); one batch per side."""
    from scipy import ndimage

    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)  # 4-connectivity within each item, none across items
    pixels: list[np.ndarray] = [np.empty(0)] * len(items)
    shapes: list[np.ndarray] = [np.empty(0)] * len(items)
    for side in np.unique(sides):
        rows = np.flatnonzero(sides == side)
        resized = resize_images(items[rows][..., None], (int(side), int(side)))[..., 0]  # (n, side, side)
        gaps, _ = ndimage.label(resized <= ITEM_THRESHOLD, structure=in_plane)
        border = np.concatenate([gaps[:, [0, -1]].ravel(), gaps[:, :, [0, -1]].ravel()])
        filled = ~np.isin(gaps, border[border > 0])  # the item's pixels (label 0) and the gaps they enclose
        for r, image, shape in zip(rows, resized, filled, strict=True):
            pixels[r], shapes[r] = image, shape
    return pixels, shapes


def _background(kind: str, textures: list[np.ndarray], h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "plain" or (kind == "mixed" and rng.random() < 0.5):
        return np.full((h, w), rng.integers(PLAIN_LEVELS[0], PLAIN_LEVELS[1] + 1), dtype=np.uint8)
    texture = textures[rng.integers(len(textures))]
    top, left = rng.integers(0, texture.shape[0] - h + 1), rng.integers(0, texture.shape[1] - w + 1)
    crop = texture[top:top + h, left:left + w]
    return np.round(crop.mean() + (crop - crop.mean()) * TEXTURE_GAIN).clip(0, 255).astype(np.uint8)


def _place(shape: np.ndarray, instances: np.ndarray, below: list[np.ndarray], max_overlap: float,
           rng: np.random.Generator) -> tuple[int, int] | None:
    """A random (top, left) where the item hides at most `max_overlap` of each item already placed, or None."""
    side = shape.shape[0]
    h, w = instances.shape
    sizes = np.array([s.sum() for s in below], dtype=np.float64)
    visible = np.bincount(instances.ravel(), minlength=len(below) + 1)[1:]
    for _ in range(PLACEMENT_TRIES):
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        if not below or max_overlap >= 1:
            return top, left
        covered = instances[top:top + side, left:left + side][shape]
        hidden = np.bincount(covered, minlength=len(below) + 1)[1:]
        if ((visible - hidden) >= (1 - max_overlap) * sizes - 1e-9).all():
            return top, left
    return None


def _drop_hidden(instances: np.ndarray, count: int) -> list[int]:
    """Renumber the instance map 1..k over the items that kept a pixel (in drawing order); returns, for each new
    number, the index of its item among the `count` placed."""
    visible = np.bincount(instances.ravel(), minlength=count + 1)[1:]
    item_of = [p for p in range(count) if visible[p] > 0]
    if len(item_of) < count:
        lut = np.zeros(count + 1, dtype=np.uint8)
        lut[[p + 1 for p in item_of]] = np.arange(1, len(item_of) + 1)
        instances[...] = lut[instances]
    return item_of
