"""Image files on disk: the ImageFolder layout read through Pillow, and the array helpers shared with new inputs.

    photos/train/<class>/*.png|jpg|...   (and optionally photos/val/, photos/test/; or just photos/<class>/)

A file that Pillow cannot read is skipped and counted (or, with `data.strict`, stops the build naming it); folders
and links leading out of the root are not followed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dlforge.config import DataConfig
from dlforge.errors import DataError, warn

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
RESIZE_CHUNK = 4096  # images per interpolate call: bounds the float32 copy


@dataclass
class Split:
    """uint8 images (N, H, W, C), int64 class ids (N,), and the files they came from (image folders)."""

    x: np.ndarray
    y: np.ndarray
    files: list[str] | None = None

    def take(self, rows: np.ndarray) -> Split:
        return Split(self.x[rows], self.y[rows], [self.files[i] for i in rows] if self.files is not None else None)


@dataclass
class Source:
    """What a dataset reads: some of the splits train / val / test, and the class names."""

    splits: dict[str, Split]
    label_names: list[str]
    name: str
    info: dict[str, Any] = field(default_factory=dict)


# --- reading ---------------------------------------------------------------------------------------------------


def read_folder(config: DataConfig) -> Source:
    root = Path(config.path)
    if not root.is_dir():
        raise DataError(f"{root}: data.path is not a folder; expected <class>/ or train/<class>/ folders of images")
    real_root = root.resolve()
    split_dirs = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    if split_dirs and "train" not in split_dirs:
        raise DataError(f"{root}: has {'/ and '.join(split_dirs)}/ but no train/ folder")
    split_dirs = split_dirs or {"train": root}
    classes = [d.name for d in sorted(split_dirs["train"].iterdir()) if _visible_dir(d, real_root)]
    if len(classes) < 2:
        raise DataError(f"{split_dirs['train']}: expected one folder per class (at least 2), found {classes}")
    skipped: list[dict[str, str]] = []
    found: dict[str, list[tuple[Path, int]]] = {}
    for split, folder in split_dirs.items():
        extra = [d.name for d in folder.iterdir() if _visible_dir(d, real_root) and d.name not in classes]
        if extra:
            raise DataError(f"{folder / extra[0]}: class folder not in {split_dirs['train']}; known: {classes}")
        found[split] = [(f, i) for i, c in enumerate(classes) for f in image_files(folder / c, real_root, skipped)]
    images: dict[str, list] = {}
    for split, files in found.items():
        images[split] = []
        for f, label in files:
            loaded = open_image(f, skipped, config.strict)
            if loaded is not None:
                images[split].append((f, label, *loaded))
    empty = [c for i, c in enumerate(classes) if not any(label == i for _, label, _, _ in images["train"])]
    if empty:
        raise DataError(f"{split_dirs['train'] / empty[0]}: no readable images ({', '.join(IMAGE_SUFFIXES)})")
    everything = [item for split in images.values() for item in split]
    all_gray = all(gray for _, _, _, gray in everything)
    mode = "L" if config.channels == 1 or (config.channels == "auto" and all_gray) else "RGB"
    first = images["train"][0][2]
    size = config.size() or (first.height, first.width)
    splits = {}
    for split, items in images.items():
        if not items:
            continue
        x = np.stack([resize_images(as_hwc(np.array(im.convert(mode)))[None], size)[0] for _, _, im, _ in items])
        y = np.array([label for _, label, _, _ in items], dtype=np.int64)
        splits[split] = Split(x, y, [str(f) for f, _, _, _ in items])
    if skipped:
        warn(f"{root}: skipped {len(skipped)} image file(s) (first: {skipped[0]['file']}: {skipped[0]['reason']}); "
             f"see info['skipped_files'], or set data.strict: true")
    return Source(splits, classes, str(root), info={"skipped_files": skipped, "input_mode": mode})


def _visible_dir(d: Path, real_root: Path) -> bool:
    return d.is_dir() and not d.name.startswith(".") and d.resolve().is_relative_to(real_root)


def image_files(folder: Path, real_root: Path, skipped: list[dict[str, str]]) -> list[Path]:
    """Image files under `folder`, sorted; symbolic links that lead out of the data folder are skipped."""
    files = []
    for top, dirs, names in os.walk(folder):  # followlinks=False: linked folders are not entered
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(top) / name
            if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if not path.resolve().is_relative_to(real_root):
                skipped.append({"file": str(path), "reason": "symbolic link out of the data folder"})
                continue
            files.append(path)
    return sorted(files)


def pillow():
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading image files needs Pillow; pip install pillow") from None
    return Image


def open_image(path: Path, skipped: list[dict[str, str]], strict: bool):
    """(image as L or RGB, whether it is grayscale), or None for a file Pillow cannot read (recorded in skipped)."""
    Image = pillow()
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in GRAY_MODES:
                return im.convert("L"), True
            rgb = im.convert("RGB")
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        reason = str(exc) or type(exc).__name__
        if strict:
            raise DataError(f"{path}: cannot read the image ({reason}); remove it or set data.strict: false") from None
        skipped.append({"file": str(path), "reason": reason})
        return None
    a = np.asarray(rgb)
    if (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all():
        return rgb.convert("L"), True  # exact: Pillow's luma weights sum to 1
    return rgb, False


def as_hwc(a: np.ndarray) -> np.ndarray:
    return a[..., None] if a.ndim == 2 else a


def resize_images(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (N, H, W, C) -> (N, *size, C): bilinear with antialiasing, rounded; a no-op at the same size."""
    if tuple(images.shape[1:3]) == tuple(size):
        return images
    out = np.empty((len(images), *size, images.shape[3]), dtype=np.uint8)
    for start in range(0, len(images), RESIZE_CHUNK):
        chunk = torch.from_numpy(images[start:start + RESIZE_CHUNK]).permute(0, 3, 1, 2).float()  # (n, C, H, W)
        resized = F.interpolate(chunk, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
        out[start:start + len(chunk)] = resized.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def to_channels(images: np.ndarray, channels: int | str) -> tuple[np.ndarray, str]:
    """(N, H, W, C) in the asked channels, and its Pillow mode; gray -> RGB repeats, RGB -> gray is Pillow's luma."""
    c = images.shape[3]
    if channels == 3 and c == 1:
        return np.repeat(images, 3, axis=3), "RGB"
    if channels == 1 and c == 3:  # ITU-R 601-2 luma in Pillow's fixed point: (R*19595 + G*38470 + B*7471) >> 16
        w = np.array([19595, 38470, 7471], dtype=np.uint32)
        gray = ((images.astype(np.uint32) * w).sum(axis=3, keepdims=True) + 0x8000) >> 16
        return gray.astype(np.uint8), "L"
    return images, "L" if c == 1 else "RGB"
