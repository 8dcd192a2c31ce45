"""Semantic segmentation from a folder of images and PNG class-index masks (the Pascal VOC way).

    data: {name: voc_masks, path: my_masks/, image_size: 128}

Two layouts: `{split}/images/*` + `{split}/masks/*.png` for split in train (required), val, test; or Pascal VOC's
own `JPEGImages/` + `SegmentationClass/` with the split lists `ImageSets/Segmentation/{train,val,test}.txt`. An
image and its mask share a file stem. A mask is a PNG of class indices (mode L or P, VOC's palette PNGs): 0 is
background, 255 marks pixels to ignore (VOC's object borders; -100 in batches). `labels.txt` beside the split
folders names the classes, one per line, from index 0 (background); without it the names are the indices up to the
largest one found. Images of different sizes need `image_size` (images bilinear, masks nearest neighbour).

Batches are {"x": (B, C, H, W), "y": (B, H, W) int64}: `dlforge.data.detection`'s contract without objects.
`write_mask` writes a class map as such a PNG (a colour per class, `palette`): what `dlforge predict` gives for a
segmentation model, which this reader takes back as a mask.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from dlforge.config import DataConfig
from dlforge.data.dataset import DataBundle, fingerprint_tensors
from dlforge.data.detection import VOID, DetectionDataset, resize_labels
from dlforge.data.imagefiles import IMAGE_SUFFIXES, pillow, resize_images
from dlforge.data.images import channel_stats
from dlforge.errors import DataError
from dlforge.registry import register_dataset

SPLITS = ("train", "val", "test")


class VocConfig(DataConfig):
    """Images and PNG class-index masks: {split}/images + {split}/masks, or VOC's JPEGImages + SegmentationClass."""

    path: str = Field(description="folder of train/images + train/masks (val, test optional), or a VOC folder")
    image_size: int | list[int] | None = Field(None, description="resize to this side or [height, width]")
    channels: Literal[1, 3] = 3

    def size(self) -> tuple[int, int] | None:
        if self.image_size is None:
            return None
        sides = [self.image_size] if isinstance(self.image_size, int) else self.image_size
        return sides[0], sides[-1]


@register_dataset(VocConfig)
def voc_masks(config: VocConfig) -> DataBundle:
    """Semantic segmentation from images + PNG class-index masks (VOC layout or {split}/images + {split}/masks)."""
    root = Path(config.path)
    pairs = find_pairs(root)
    size = config.size()
    splits = {}
    for name, files in pairs.items():
        splits[name] = read_pairs(files, config.channels, size)
        size = size or splits[name][0].shape[1:3]
    images = splits["train"][0]
    mean, std = channel_stats(images)
    top = max(int(m[m != VOID].max(initial=0)) for _, m in splits.values())
    names = _class_names(root, top)
    datasets = {name: DetectionDataset(x, mean, std, semantic=m) for name, (x, m) in splits.items()}
    n, h, w, c = images.shape
    info = {"task": "segmentation", "num_classes": len(names) - 1, "label_names": names[1:], "segment_names": names,
            "modality": "image", "image_shape": [c, h, w], "source": str(root),
            "files": {name: [str(i) for i, _ in files] for name, files in pairs.items()},
            **{f"n_{name}": len(splits[name][0]) if name in splits else 0 for name in SPLITS}}
    preprocessing = {"kind": "image", "task": "segmentation", "mean": mean, "std": std, "channels": c,
                     "image_size": [h, w], "input_mode": "L" if c == 1 else "RGB", "input_size": [h, w], "ops": [],
                     "label_names": names[1:], "segment_names": names}
    blobs = [torch.from_numpy(np.ascontiguousarray(a)) for x, m in splits.values() for a in (x, m)]
    return DataBundle(
        datasets["train"], datasets.get("val"), datasets.get("test"), info=info,
        model_defaults={"in_channels": c, "image_size": h if h == w else [h, w], "num_classes": len(names)},
        preprocessing=preprocessing, fingerprint=fingerprint_tensors(*blobs),
    )


def find_pairs(root: Path) -> dict[str, list[tuple[Path, Path]]]:
    """{split: [(image, mask), ...]} for the layouts the module describes."""
    if not root.is_dir():
        raise DataError(f"{root}: data.path is not a folder; expected train/images and train/masks")
    if (root / "SegmentationClass").is_dir():
        return _voc_pairs(root)
    pairs = {}
    for split in SPLITS:
        images, masks = root / split / "images", root / split / "masks"
        if images.is_dir() and masks.is_dir():
            found = {p.stem: p for p in masks.iterdir() if p.suffix.lower() == ".png"}
            files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            lonely = [p for p in files if p.stem not in found]
            if lonely:
                raise DataError(f"{lonely[0]}: no mask {masks / (lonely[0].stem + '.png')}")
            pairs[split] = [(p, found[p.stem]) for p in files]
    if not pairs.get("train"):
        raise DataError(f"{root}: no train/images + train/masks with images (or VOC's SegmentationClass/)")
    return pairs


def _voc_pairs(root: Path) -> dict[str, list[tuple[Path, Path]]]:
    pairs = {}
    for split in SPLITS:
        listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not listing.is_file():
            continue
        stems = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        pairs[split] = [(_voc_image(root, stem, listing), root / "SegmentationClass" / f"{stem}.png")
                        for stem in stems]
    if not pairs.get("train"):
        raise DataError(f"{root / 'ImageSets' / 'Segmentation' / 'train.txt'}: missing or empty; it lists the "
                        f"training images")
    return pairs


def _voc_image(root: Path, stem: str, listing: Path) -> Path:
    for suffix in (".jpg", ".jpeg", ".png"):
        path = root / "JPEGImages" / f"{stem}{suffix}"
        if path.is_file():
            return path
    raise DataError(f"{listing}: {stem}: no image {root / 'JPEGImages' / stem}.jpg")


def read_pairs(pairs: list[tuple[Path, Path]], channels: int, size: tuple[int, int] | None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, C) and class-index masks (N, H, W) uint8, resized to `size` if given."""
    images, masks = [], []
    for image_path, mask_path in pairs:
        image = _open(image_path, "L" if channels == 1 else "RGB")
        mask = _open(mask_path, None)
        if mask.ndim != 2:
            raise DataError(f"{mask_path}: expected a class-index PNG (mode L or P), got {mask.shape[2]} channels")
        if mask.shape != image.shape[:2]:
            raise DataError(f"{mask_path}: {mask.shape[1]}x{mask.shape[0]} pixels, its image {image_path.name} is "
                            f"{image.shape[1]}x{image.shape[0]}")
        image = image[..., None] if image.ndim == 2 else image
        target = size or (images[0].shape[:2] if images else image.shape[:2])
        if image.shape[:2] != tuple(target):
            if size is None:
                raise DataError(f"{image_path}: {image.shape[1]}x{image.shape[0]} pixels, the first image has "
                                f"{target[1]}x{target[0]}; set data.image_size to resize them all")
            image, mask = resize_images(image[None], target)[0], resize_labels(mask, target)
        images.append(image)
        masks.append(mask.astype(np.uint8))
    return np.stack(images), np.stack(masks)


def _open(path: Path, mode: str | None) -> np.ndarray:
    Image = pillow()
    try:
        with Image.open(path) as im:
            im.load()
            if mode is None and im.mode not in ("L", "P"):
                raise DataError(f"{path}: expected a class-index PNG (mode L or P), got mode {im.mode}")
            return np.array(im.convert(mode) if mode else im)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot read the image ({str(exc) or type(exc).__name__})") from None


def _class_names(root: Path, top: int) -> list[str]:
    listing = root / "labels.txt"
    if not listing.is_file():
        return [str(i) for i in range(max(top, 1) + 1)]
    names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    if len(names) <= top:
        raise DataError(f"{listing}: {len(names)} names, the masks use class {top}")
    return names


# Class colours of masks and plots: background black, then matplotlib's tab10 and tab20's light shades (told apart at
# a glance, where VOC's map gives class 8 a red barely off black), then Pascal VOC's map (255, its void border, cream).
DISTINCT = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
            (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (199, 199, 199),
            (219, 219, 141), (158, 218, 229)]


def voc_colormap(n: int = 256) -> np.ndarray:
    """Pascal VOC's colour map, (n, 3) uint8: the bits of a class index spread over the high bits of R, G and B
    (0 black, 1 dark red, 2 dark green, 3 olive, 4 navy, ... 255, the void border, cream)."""
    index = np.arange(n)
    colors = np.zeros((n, 3), dtype=np.int64)
    for bit in range(8):  # bit 3*bit + channel of the index -> bit 7 - bit of that channel
        for channel in range(3):
            colors[:, channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    return colors.astype(np.uint8)


def palette(n: int = 256) -> np.ndarray:
    """The colour of each class 0..n-1, (n, 3) uint8: see DISTINCT."""
    colors = voc_colormap(256)
    colors[1:1 + len(DISTINCT)] = DISTINCT
    return colors[:n]


def write_mask(path: Path, mask: np.ndarray) -> Path:
    """A class map (H, W) of indices 0..255 as a palette PNG (mode P, `palette`'s colours): the pixel values are the
    class indices, which `voc_masks` reads back."""
    Image = pillow()
    if mask.ndim != 2 or mask.min(initial=0) < 0 or mask.max(initial=0) > 255:
        raise ValueError(f"expected an (H, W) map of classes 0..255, got shape {mask.shape}")
    h, w = mask.shape
    image = Image.frombytes("P", (w, h), np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
    image.putpalette(palette().ravel().tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
