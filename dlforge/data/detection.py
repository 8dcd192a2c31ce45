"""Detection and segmentation samples: images with any number of objects, batched as padded tensors.

The batch contract (a dict of tensors, so micro-batch slicing, DDP and resume work as for every other task):

    x         float32 (B, C, H, W)   the images, normalized with the training split's per-channel mean and std
    y         int64   (B, H, W)      semantic map, when the data has one: 0 background, k + 1 for class k,
                                     -100 for pixels to ignore (VOC's 255 "void" border)
    boxes     float32 (B, M, 4)      xyxy in pixels of x: the box [x1, x2) x [y1, y2) of an object's pixels
    labels    int64   (B, M)         class index 0..K-1 (the data's `label_names`), -1 on padding
    box_mask  bool    (B, M)         which of the M slots hold an object
    iscrowd   bool    (B, M)         COCO crowd regions (to ignore in training, as COCOeval does)
    area      float32 (B, M)         the object's area in pixels (its mask's, else its box's)
    masks     bool    (B, M, H, W)   one mask per object, when the dataset has `masks` on

M is the largest number of objects of an image in the batch (at least 1). `ds[i]` is one unpadded sample (the same
keys without B, n objects instead of M); `ds.__getitems__(indices)` and `collate_detection(samples)` pad them.
COCO category ids, semantic ids and class indices relate as `category_id = semantic id = label + 1`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from dlforge.data import rle
from dlforge.data.images import normalize

IGNORE_INDEX = -100  # semantic pixels the loss skips (cross_entropy's default ignore_index)
VOID = 255  # how such pixels are stored (uint8), as VOC marks them
OBJECT_KEYS = {"boxes": 0.0, "labels": -1, "box_mask": False, "iscrowd": False, "area": 0.0, "masks": False}


@dataclass
class Objects:
    """The objects of every image, concatenated: image i's objects are rows start[i]:start[i + 1].

    masks: per object, its runs (`dlforge.data.rle`, column-major) at the image's size; None without masks.
    """

    start: np.ndarray  # (N + 1,) int64
    boxes: np.ndarray  # (T, 4) float32, xyxy pixels
    labels: np.ndarray  # (T,) int64
    iscrowd: np.ndarray  # (T,) bool
    area: np.ndarray  # (T,) float32
    masks: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.start) - 1

    @classmethod
    def from_lists(cls, boxes: Sequence[np.ndarray], labels: Sequence[np.ndarray], iscrowd: Sequence[np.ndarray],
                   area: Sequence[np.ndarray], masks: Sequence[list[np.ndarray]] | None = None) -> Objects:
        """Objects from per-image arrays (boxes (n_i, 4), labels, iscrowd, area (n_i,)) and per-image mask runs."""
        counts = np.array([len(b) for b in boxes], dtype=np.int64)
        return cls(
            start=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            boxes=np.concatenate([np.zeros((0, 4)), *boxes]).astype(np.float32).reshape(-1, 4),
            labels=np.concatenate([np.zeros(0), *labels]).astype(np.int64),
            iscrowd=np.concatenate([np.zeros(0), *iscrowd]).astype(bool),
            area=np.concatenate([np.zeros(0), *area]).astype(np.float32),
            masks=[m for image in masks for m in image] if masks is not None else None,
        )


class DetectionDataset(Dataset):
    """Images (N, H, W, C) uint8 with their objects and/or semantic maps; samples and batches as in the module."""

    def __init__(self, images: np.ndarray, mean: list[float], std: list[float], objects: Objects | None = None,
                 semantic: np.ndarray | None = None, masks: bool = False):
        if objects is not None and len(objects) != len(images):
            raise ValueError(f"{len(objects)} images of objects for {len(images)} images")
        if masks and (objects is None or objects.masks is None):
            raise ValueError("masks=True needs objects with masks")
        self.images, self.mean, self.std = images, mean, std
        self.objects, self.semantic, self.masks = objects, semantic, masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        sample = {"x": normalize(self.images[i:i + 1], self.mean, self.std)[0]}
        if self.semantic is not None:
            y = torch.from_numpy(self.semantic[i].astype(np.int64))
            sample["y"] = y.masked_fill_(y == VOID, IGNORE_INDEX)
        if self.objects is not None:
            sample.update(self._objects_of(i))
        return sample

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return collate_detection([self[i] for i in indices])

    def _objects_of(self, i: int) -> dict[str, torch.Tensor]:
        o = self.objects
        rows = slice(int(o.start[i]), int(o.start[i + 1]))
        n = rows.stop - rows.start
        out = {"boxes": torch.from_numpy(o.boxes[rows]), "labels": torch.from_numpy(o.labels[rows]),
               "box_mask": torch.ones(n, dtype=torch.bool), "iscrowd": torch.from_numpy(o.iscrowd[rows]),
               "area": torch.from_numpy(o.area[rows])}
        if self.masks:
            h, w = self.images.shape[1:3]
            columns = rle.runs_to_columns(o.masks[rows]) if n else np.zeros((0, h * w), dtype=bool)
            out["masks"] = torch.from_numpy(columns.reshape(n, w, h).transpose(0, 2, 1).copy())  # (n, H, W)
        return out


def unpad(batch: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """A padded batch's objects, image by image, without the padding: what `dlforge.eval.coco_map` takes as targets
    ({"boxes", "labels", "iscrowd", "area", ["masks"]} per image)."""
    keys = [k for k in OBJECT_KEYS if k in batch and k != "box_mask"]
    return [{k: batch[k][b][batch["box_mask"][b]] for k in keys} for b in range(len(batch["box_mask"]))]


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An (H, W) map of labels or mask values resized to `size` by nearest neighbour (pixel centres)."""
    h, w = labels.shape
    rows = ((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.int64)
    cols = ((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.int64)
    return labels[rows][:, cols]


def collate_detection(samples: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Samples -> one batch: image keys stacked, object keys padded to the batch's largest object count (>= 1)."""
    first = samples[0]
    batch = {k: torch.stack([s[k] for s in samples]) for k in first if k not in OBJECT_KEYS}
    counts = [len(s["labels"]) for s in samples] if "labels" in first else []
    m = max([1, *counts])
    for key, pad in OBJECT_KEYS.items():
        if key not in first:
            continue
        shape = first[key].shape[1:]
        out = torch.full((len(samples), m, *shape), pad, dtype=first[key].dtype)
        for b, s in enumerate(samples):
            out[b, :len(s[key])] = s[key]
        batch[key] = out
    return batch

