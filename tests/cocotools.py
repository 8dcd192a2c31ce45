"""Synthetic COCO files (ground truth + results) and pycocotools' COCOeval on them, for the mAP parity tests and
bench/coco_map.py."""

from __future__ import annotations

import contextlib
import io
from copy import deepcopy

import numpy as np

from dlforge.data import rle

CATEGORIES = [1, 2, 3, 5, 7]  # ids need not be contiguous; 7 never has a truth (its AP is -1)


def _ellipse(h: int, w: int, box: np.ndarray) -> np.ndarray:
    """A filled ellipse inside the xywh box, as an (h, w) uint8 mask."""
    yy, xx = np.mgrid[:h, :w] + 0.5
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    return ((((xx - cx) / max(box[2] / 2, 0.5)) ** 2 + ((yy - cy) / max(box[3] / 2, 0.5)) ** 2) <= 1).astype(np.uint8)


def _polygon(box: np.ndarray, rng: np.random.Generator) -> list[float]:
    """An 8-vertex polygon inscribed in the xywh box, corners jittered."""
    t = np.linspace(0, 2 * np.pi, 9)[:-1] + rng.uniform(0, 0.3)
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    r = rng.uniform(0.8, 1.0, size=8)
    pts = np.stack([cx + r * box[2] / 2 * np.cos(t), cy + r * box[3] / 2 * np.sin(t)], axis=1)
    return [round(float(v), 2) for v in pts.ravel()]


def _random_box(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    side = np.exp(rng.uniform(np.log(4), np.log(min(h, w)), size=2))  # areas from small to large
    x, y = rng.uniform(0, w - side[0]), rng.uniform(0, h - side[1])
    return np.round(np.array([x, y, side[0], side[1]]), 2)


def synthetic_coco(n_images: int, seed: int, segm: bool = False, crowd_rate: float = 0.1, empty_rate: float = 0.15,
                   crowded_images: int = 2, false_positives: int = 4) -> tuple[dict, list[dict]]:
    """A COCO instances dict and a results list: truths of 4 categories (some crowd, some images without any),
    detections near most truths plus up to `false_positives` per image, scores with ties, a category the truth
    doesn't know, and `crowded_images` images with over 100 detections of one category (COCOeval keeps 100)."""
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []
    for i in range(n_images):
        h, w = (int(v) for v in rng.integers(48, 161, size=2))
        image_id = 10 * (i + 1)  # ids need not be contiguous either
        images.append({"id": image_id, "height": h, "width": w, "file_name": f"{image_id}.png"})
        n = 0 if rng.random() < empty_rate else int(rng.integers(1, 7))
        for _ in range(n):
            box, cat = _random_box(rng, h, w), int(rng.choice(CATEGORIES[:4]))
            crowd = int(rng.random() < crowd_rate)
            ann = {"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": box.tolist(),
                   "iscrowd": crowd}
            if segm:
                mask = _ellipse(h, w, box)
                if crowd:  # crowds are uncompressed RLE in COCO files
                    ann["segmentation"] = {"size": [h, w], "counts": rle.mask_runs(mask).tolist()}
                else:
                    ann["segmentation"] = [_polygon(box, rng)]
                ann["area"] = float(mask.sum())
            else:
                ann["area"] = float(box[2] * box[3] * rng.uniform(0.6, 1.0))
            anns.append(ann)
            for _ in range(int(rng.integers(0, 3))):  # detections near the truth
                results.append(_detection(rng, image_id, cat, box + rng.normal(0, box[2:].mean() * 0.1, 4), h, w,
                                          segm))
        for _ in range(int(rng.integers(0, false_positives + 1))):  # false positives, some of an unknown category
            cat = int(rng.choice(CATEGORIES + [99]))
            results.append(_detection(rng, image_id, cat, _random_box(rng, h, w), h, w, segm))
        if i < crowded_images:
            base = _random_box(rng, h, w)
            for _ in range(110):
                results.append(_detection(rng, image_id, 1, base + rng.normal(0, 3, 4), h, w, segm))
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": c, "name": f"class{c}"} for c in CATEGORIES]}
    return gt, results


def _detection(rng: np.random.Generator, image_id: int, cat: int, box: np.ndarray, h: int, w: int,
               segm: bool) -> dict:
    box = np.round(np.abs(box), 2)
    box[2:] = np.maximum(box[2:], 1.0)
    det = {"image_id": image_id, "category_id": cat, "score": round(float(rng.random()), 2)}  # 2 decimals: ties
    if segm:
        det["segmentation"] = rle.encode(_ellipse(h, w, box))
    else:
        det["bbox"] = box.tolist()
    return det


def pycocotools_eval(gt: dict, results: list[dict], iou_type: str, copy: bool = True):
    """COCOeval's summary (12 floats) and its precision/recall arrays; an empty results list is a results COCO with
    no annotations (COCO.loadRes cannot read an empty list). pycocotools writes into the dicts it is given: they
    are copied first unless `copy` is False."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if copy:
        gt, results = deepcopy(gt), deepcopy(results)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:
            coco_dt = COCO()
            coco_dt.dataset = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats, ev.eval
