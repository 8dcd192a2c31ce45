"""COCO-format datasets on disk: a user's images + instances JSON read for training, and COCO files written.

    data: {name: coco, path: my_data/, task: instance_segmentation, image_size: 128}

`path` holds, per split, an instances file and its images folder: `instances_train.json` + `train/` (the layout
`write_coco` and the canvases' export write), or COCO's `annotations/instances_train2017.json` + `train2017/`.
train is required; val and test are read when present. The categories are the training file's, in id order: class
index k is the k-th category (`label_names`), so a category id is not a class index. Boxes ([x, y, w, h] in COCO,
xyxy in batches) may cross the image border by at most a pixel (they are clipped); a box further out, a corrupt or
missing image, or an image whose size differs from the JSON's is one DataError naming the file and the annotation.
Masks (polygons, uncompressed or compressed RLE; `masks: true`, the default for instance_segmentation) are read
with `dlforge.data.rle`, exactly as pycocotools reads them. Images of different sizes need `image_size`: images are
resized bilinearly, masks by nearest neighbour, boxes and areas scaled. Crowd regions are kept, flagged `iscrowd`.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from dlforge.config import DataConfig
from dlforge.data import rle
from dlforge.data.dataset import DataBundle, fingerprint_tensors
from dlforge.data.detection import DetectionDataset, Objects, resize_labels
from dlforge.data.imagefiles import pillow, resize_images
from dlforge.data.images import channel_stats
from dlforge.errors import ConfigError, DataError
from dlforge.registry import register_dataset
from dlforge.runs.rundir import atomic_write_bytes, atomic_write_text

BORDER_TOLERANCE = 1.0  # pixels a box may cross the image border by (rounding in real files); it is clipped
SPLITS = ("train", "val", "test")


class CocoConfig(DataConfig):
    """A COCO-format dataset: instances_{split}.json + {split}/ image folders in data.path."""

    path: str = Field(description="folder of instances_train.json + train/ (val, test optional), or COCO's "
                                  "annotations/instances_train2017.json + train2017/")
    task: Literal["detection", "instance_segmentation"] = "detection"
    image_size: int | list[int] | None = Field(None, description="resize to this side or [height, width] "
                                               "(required when the images differ in size)")
    channels: Literal[1, 3] = 3
    masks: bool | None = Field(None, description="read the masks (default: for instance_segmentation)")

    @model_validator(mode="after")
    def _check(self) -> CocoConfig:
        if self.image_size is not None and self.size() is None:
            raise ConfigError(f"data.image_size: expected a positive side or [height, width], got {self.image_size}")
        return self

    def size(self) -> tuple[int, int] | None:
        if self.image_size is None:
            return None
        sides = [self.image_size] if isinstance(self.image_size, int) else self.image_size
        if len(sides) not in (1, 2) or min(sides) < 1:
            return None
        return sides[0], sides[-1]

    def with_masks(self) -> bool:
        return self.task == "instance_segmentation" if self.masks is None else self.masks


@dataclass
class CocoSplit:
    """A COCO file read: images (N, H, W, C) uint8, their objects, the files and ids they came from."""

    images: np.ndarray
    objects: Objects
    files: list[str]
    image_ids: list[int]
    category_ids: list[int]
    label_names: list[str]


# --- the registered dataset -------------------------------------------------------------------------------------


@register_dataset(CocoConfig)
def coco(config: CocoConfig) -> DataBundle:
    """A COCO-format dataset (instances JSON + images): boxes, crowds, polygon or RLE masks."""
    found = find_splits(Path(config.path))
    train = read_coco(*found["train"], image_size=config.size(), channels=config.channels, masks=config.with_masks())
    splits = {"train": train}
    size = train.images.shape[1:3]
    for name in ("val", "test"):
        if name in found:
            splits[name] = read_coco(*found[name], image_size=config.size() or size, channels=config.channels,
                                     masks=config.with_masks(), categories=train.category_ids)
    mean, std = channel_stats(train.images)
    masks = config.with_masks()
    datasets = {name: DetectionDataset(s.images, mean, std, s.objects, masks=masks) for name, s in splits.items()}
    n, h, w, c = train.images.shape
    names = train.label_names
    info = {"task": config.task, "num_classes": len(names), "label_names": names, "category_ids": train.category_ids,
            "modality": "image", "image_shape": [c, h, w], "masks": masks, "source": str(config.path),
            "files": {name: s.files for name, s in splits.items()},
            **{f"n_{name}": len(splits[name].images) if name in splits else 0 for name in SPLITS}}
    preprocessing = {"kind": "image", "task": config.task, "mean": mean, "std": std, "channels": c,
                     "image_size": [h, w], "input_mode": "L" if c == 1 else "RGB", "input_size": [h, w], "ops": [],
                     "label_names": names, "category_ids": train.category_ids}
    blobs = [torch.from_numpy(np.ascontiguousarray(a)) for s in splits.values()
             for a in (s.images, s.objects.boxes, s.objects.labels)]
    return DataBundle(
        datasets["train"], datasets.get("val"), datasets.get("test"), info=info,
        model_defaults={"in_channels": c, "image_size": h if h == w else [h, w], "num_classes": len(names)},
        preprocessing=preprocessing, fingerprint=fingerprint_tensors(*blobs),
    )


def find_splits(root: Path) -> dict[str, tuple[Path, Path]]:
    """{split: (images folder, instances JSON)} under `root`, for the layouts the module describes."""
    if not root.is_dir():
        raise DataError(f"{root}: data.path is not a folder; expected instances_train.json and train/")
    found = {}
    for split in SPLITS:
        files = [*sorted(root.glob(f"instances_{split}*.json")),
                 *sorted(root.glob(f"annotations/instances_{split}*.json"))]
        if not files:
            continue
        suffix = files[0].stem[len("instances_"):]  # train, or train2017
        images = root / suffix
        if not images.is_dir():
            raise DataError(f"{files[0]}: no image folder {images} beside it")
        found[split] = (images, files[0])
    if "train" not in found:
        raise DataError(f"{root}: no instances_train*.json (or annotations/instances_train*.json)")
    return found


# --- reading ----------------------------------------------------------------------------------------------------


def read_coco(images_dir: str | Path, annotations: str | Path, image_size: tuple[int, int] | None = None,
              channels: int = 3, masks: bool = False, categories: list[int] | None = None) -> CocoSplit:
    """Read a COCO instances file and its images (see the module); `categories` fixes the category ids (in class
    order) to those of another split."""
    images_dir, annotations = Path(images_dir), Path(annotations)
    doc = _read_json(annotations)
    cats = sorted(doc["categories"], key=lambda c: c["id"])
    category_ids = categories if categories is not None else [int(c["id"]) for c in cats]
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in cats}
    label_of = {cid: k for k, cid in enumerate(category_ids)}
    images = sorted(doc["images"], key=lambda img: img["id"])
    by_image: dict[Any, list[dict]] = defaultdict(list)
    known = {img["id"] for img in images}
    for ann in doc["annotations"]:
        where = f"{annotations}: annotation {ann.get('id', '?')}"
        if ann.get("image_id") not in known:
            raise DataError(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
        if ann.get("category_id") not in label_of:
            raise DataError(f"{where}: category_id {ann.get('category_id')!r} is not a category of "
                            f"{'the training file' if categories is not None else 'this file'}")
        by_image[ann["image_id"]].append(ann)
    pixels, per_image = [], []
    for img in images:
        anns = by_image[img["id"]]
        pixels.append(_read_image(images_dir, img, anns, channels, image_size, annotations))
        per_image.append(_image_objects(img, anns, label_of, annotations))
    size = tuple(image_size) if image_size else (pixels[0].shape[:2] if pixels else (0, 0))
    odd = [img for img, p in zip(images, pixels, strict=True) if p.shape[:2] != tuple(size)]
    if odd:
        raise DataError(f"{images_dir / odd[0]['file_name']}: {odd[0]['width']}x{odd[0]['height']} pixels, the first "
                        f"image has {size[1]}x{size[0]}; set data.image_size to resize them all")
    stacked = np.stack(pixels) if pixels else np.zeros((0, *size, channels), dtype=np.uint8)
    runs = _mask_runs(images, by_image, size, annotations) if masks else None
    boxes, labels, crowd, area = (list(v) for v in zip(*per_image, strict=True)) if per_image else ([], [], [], [])
    for i, img in enumerate(images):  # to the images' new size
        sy, sx = size[0] / img["height"], size[1] / img["width"]
        boxes[i] = boxes[i] * np.array([sx, sy, sx, sy], dtype=np.float32)
        area[i] = area[i] * (sx * sy)
    objects = Objects.from_lists(boxes, labels, crowd, area, runs)
    return CocoSplit(stacked, objects, [img["file_name"] for img in images], [img["id"] for img in images],
                     category_ids, [names.get(cid, str(cid)) for cid in category_ids])


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a JSON file ({exc})") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path}: expected a COCO instances object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise DataError(f"{path}: no '{key}' list; a COCO instances file has images, annotations, categories")
    for img in doc["images"]:
        if not all(k in img for k in ("id", "file_name", "height", "width")):
            raise DataError(f"{path}: image {img.get('id', '?')}: needs id, file_name, height and width")
    for cat in doc["categories"]:
        if "id" not in cat:
            raise DataError(f"{path}: category {cat.get('name', '?')!r} has no id")
    return doc


def _read_image(folder: Path, img: dict, anns: list[dict], channels: int, size: tuple[int, int] | None,
                source: Path) -> np.ndarray:
    Image = pillow()
    path = folder / img["file_name"]
    first = f"annotation {anns[0].get('id', '?')}" if anns else "no annotation"
    try:
        with Image.open(path) as im:
            im.load()
            array = np.array(im.convert("L" if channels == 1 else "RGB"))
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found (image {img['id']} of {source}, {first})") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot read the image ({str(exc) or type(exc).__name__}; image {img['id']} of "
                        f"{source}, {first})") from None
    if array.shape[:2] != (img["height"], img["width"]):
        raise DataError(f"{path}: {array.shape[1]}x{array.shape[0]} pixels, {source} says {img['width']}x"
                        f"{img['height']} (image {img['id']}, {first})")
    array = array[..., None] if array.ndim == 2 else array
    return resize_images(array[None], size)[0] if size is not None else array


def _image_objects(img: dict, anns: list[dict], label_of: dict[int, int], source: Path):
    """(boxes xyxy (n, 4), labels, iscrowd, area) of one image's annotations, each box checked against the image."""
    h, w = img["height"], img["width"]
    boxes = np.zeros((len(anns), 4), dtype=np.float32)
    for j, ann in enumerate(anns):
        box = ann.get("bbox")
        where = f"{source}: annotation {ann.get('id', '?')} (image {img['file_name']}, {w}x{h})"
        if not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, (int, float)) for v in box):
            raise DataError(f"{where}: bbox must be [x, y, width, height], got {box!r}")
        x, y, bw, bh = box
        t = BORDER_TOLERANCE
        if bw <= 0 or bh <= 0:
            raise DataError(f"{where}: bbox {box} is empty (width and height must be > 0)")
        if x < -t or y < -t or x + bw > w + t or y + bh > h + t:
            raise DataError(f"{where}: bbox {box} lies outside the image")
        boxes[j] = (max(x, 0), max(y, 0), min(x + bw, w), min(y + bh, h))
    labels = np.array([label_of[a["category_id"]] for a in anns], dtype=np.int64)
    crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
    area = np.array([a.get("area", (b[2] - b[0]) * (b[3] - b[1])) for a, b in zip(anns, boxes, strict=True)],
                    dtype=np.float32)
    return boxes, labels, crowd, area


def _mask_runs(images: list[dict], by_image: dict, size: tuple[int, int], source: Path) -> list[list[np.ndarray]]:
    """Every annotation's mask as runs at `size` (nearest-neighbour resized when the image is resized)."""
    anns = [(img, a) for img in images for a in by_image[img["id"]]]
    for _, a in anns:
        if "segmentation" not in a:
            raise DataError(f"{source}: annotation {a.get('id', '?')}: no 'segmentation'; set data.masks: false "
                            f"to read boxes only")
    try:
        sizes = [(img["height"], img["width"]) for img, _ in anns]
        read = rle.segmentations_runs([a["segmentation"] for _, a in anns], sizes)
    except DataError:  # find the annotation to name
        for img, a in anns:
            try:
                rle.segmentation_runs(a["segmentation"], img["height"], img["width"])
            except DataError as exc:
                raise DataError(f"{source}: annotation {a.get('id', '?')}: {exc}") from None
        raise
    out: dict[Any, list[np.ndarray]] = defaultdict(list)
    for (img, a), (runs, shape) in zip(anns, read, strict=True):
        if shape != (img["height"], img["width"]):
            raise DataError(f"{source}: annotation {a.get('id', '?')}: an RLE of {shape[1]}x{shape[0]} in an image of "
                            f"{img['width']}x{img['height']}")
        if tuple(size) != shape:
            runs = rle.mask_runs(resize_labels(rle.runs_to_mask(runs, *shape), size))
        out[img["id"]].append(runs)
    return [out[img["id"]] for img in images]


# --- writing ----------------------------------------------------------------------------------------------------


def write_coco(folder: str | Path, split: str, images: np.ndarray, objects: Objects, label_names: list[str]) -> Path:
    """Write images (N, H, W, C) uint8 as {folder}/{split}/000001.png ... and their objects (with masks) as
    {folder}/instances_{split}.json: category id = class index + 1, bbox [x, y, w, h], RLE masks. Returns the
    JSON's path."""
    Image = pillow()
    folder = Path(folder)
    (folder / split).mkdir(parents=True, exist_ok=True)
    n, h, w, c = images.shape
    records, anns = [], []
    for i in range(n):
        name = f"{i + 1:06d}.png"
        buffer = io.BytesIO()
        Image.fromarray(images[i, ..., 0] if c == 1 else images[i]).save(buffer, format="PNG")
        atomic_write_bytes(folder / split / name, buffer.getvalue())
        records.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        for t in range(int(objects.start[i]), int(objects.start[i + 1])):
            x1, y1, x2, y2 = (float(v) for v in objects.boxes[t])
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(objects.labels[t]) + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(objects.area[t]),
                         "iscrowd": int(objects.iscrowd[t]),
                         "segmentation": {"size": [h, w], "counts": rle.runs_to_string(objects.masks[t])}})
    doc = {"info": {"description": f"dlforge {split}"}, "images": records, "annotations": anns,
           "categories": [{"id": k + 1, "name": name, "supercategory": ""} for k, name in enumerate(label_names)]}
    path = folder / f"instances_{split}.json"
    atomic_write_text(path, json.dumps(doc, separators=(",", ":")))
    return path
