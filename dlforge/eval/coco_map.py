"""COCO detection metrics for boxes and masks: COCOeval's algorithm, vectorised with numpy.

    result = coco_map(predictions, targets, iou_type="bbox")     # per image: dicts of arrays (or tensors)
    result = coco_eval("instances_val.json", "results.json", iou_type="segm")      # COCO files or their dicts
    result.stats  # {"map": ..., "map_50", "map_75", "map_small", "map_medium", "map_large",
                  #  "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large"}

A prediction is {"boxes" (D, 4), "scores" (D,), "labels" (D,), "masks" (D, H, W) or D RLEs for segm}; a target is
{"boxes" (G, 4), "labels" (G,), optional "iscrowd" (G,), "area" (G,), "masks"}, boxes in `box_format` (xyxy by
default). Without "area", a truth's area is its mask's pixels (segm) or its box's w*h (bbox). Labels are category ids.

The algorithm is pycocotools' COCOeval, step for step, and its figures equal COCOeval's (tests/eval/test_coco_map.py
holds them to 1e-4 on fixed files): for every image and category, the detections sorted by score (ties in input
order) and cut to the largest max_dets; IoU with pycocotools' formulas (a crowd truth divides by the detection's
area); for each IoU threshold .50:.05:.95 and area range (all, small < 32^2, medium, large >= 96^2), each detection
in score order takes the unmatched truth with the highest IoU >= the threshold (the last one on a tie), regular
truths before ignored ones (crowds, truths outside the area range), a crowd truth taking any number of detections;
a detection matched to an ignored truth, or unmatched and outside the area range, is ignored. Per category, area and
max_dets the detections of all images are ranked by score, and precision (made monotone) is read at the 101 recall
points 0:.01:1 (0 past the last recall reached); AP and AR are means over the categories that have regular truths,
-1 where none has. The greedy matching runs once per detection rank for all images, categories, thresholds and area
ranges at once, which is what makes it faster than pycocotools' per-image Python loops.

Two pycocotools quirks are not copied: a truth whose annotation id is 0 counts as unmatched there (its matches are
stored as ids), and `map` uses the largest of `max_dets` (COCOeval's summary asks for 100 whatever they are).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlforge.data import rle
from dlforge.errors import DataError
from dlforge.layers.boxes import BOX_FORMATS

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCOeval's: linspace, since arange drifts
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
AREA_RANGES = {"all": (0.0, 1e10), "small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, 1e10)}
MAX_DETS = (1, 10, 100)
IOU_TYPES = ("bbox", "segm")


@dataclass
class CocoMAP:
    """COCO's summary figures, and the arrays they come from (-1 where a category has no regular truth).

    precision: (T, R, K, A, M), recall: (T, K, A, M) over IoU thresholds, recall points, `categories`, area ranges
    (all, small, medium, large) and `max_dets`.
    """

    stats: dict[str, float]
    precision: np.ndarray
    recall: np.ndarray
    categories: list[int]
    max_dets: tuple[int, ...]

    def ap_per_category(self) -> dict[int, float]:
        """AP@[.5:.95] of each category (all areas, the largest max_dets); -1 for a category without truths."""
        return {c: _mean_defined(self.precision[:, :, k, 0, -1]) for k, c in enumerate(self.categories)}


@dataclass
class _Objects:
    """Truths or detections of every image, one row each."""

    image: np.ndarray  # (N,) image index
    category: np.ndarray  # (N,) index into the category list
    boxes: np.ndarray  # (N, 4) xywh, float64
    area: np.ndarray  # (N,) float64
    score: np.ndarray  # (N,) detections' scores (0 for truths)
    crowd: np.ndarray  # (N,) bool (False for detections)
    masks: list | None  # per row an RLE dict or an (H, W) array, for segm


# --- entry points -----------------------------------------------------------------------------------------------


def coco_map(predictions: Sequence[dict[str, Any]], targets: Sequence[dict[str, Any]], iou_type: str = "bbox",
             box_format: str = "xyxy", max_dets: Sequence[int] = MAX_DETS) -> CocoMAP:
    """COCO mAP of per-image predictions against per-image targets (dicts of arrays or tensors, see the module)."""
    _check_iou_type(iou_type)
    if len(predictions) != len(targets):
        raise DataError(f"coco_map: {len(predictions)} predictions for {len(targets)} images of targets")
    truths = _from_arrays(targets, iou_type, box_format, truth=True)
    detections = _from_arrays(predictions, iou_type, box_format, truth=False)
    categories = sorted(set(truths.category.tolist()) | set(detections.category.tolist()))
    index = {c: i for i, c in enumerate(categories)}
    for objects in (truths, detections):
        objects.category = np.array([index[c] for c in objects.category.tolist()], dtype=np.int64)
    return _evaluate(truths, detections, categories, iou_type, max_dets)


def coco_eval(ground_truth: str | Path | dict, results: str | Path | list, iou_type: str = "bbox",
              max_dets: Sequence[int] = MAX_DETS) -> CocoMAP:
    """COCO mAP of a results file (a list of {image_id, category_id, score, bbox | segmentation}) against a COCO
    instances file, as `COCOeval(COCO(gt), COCO(gt).loadRes(results), iou_type)` computes it."""
    _check_iou_type(iou_type)
    gt = _load_json(ground_truth) if not isinstance(ground_truth, dict) else ground_truth
    res = _load_json(results) if not isinstance(results, list) else results
    images = {img["id"]: img for img in gt.get("images", [])}
    image_index = {image_id: i for i, image_id in enumerate(sorted(images))}
    categories = sorted(c["id"] for c in gt.get("categories", []))
    cat_index = {c: i for i, c in enumerate(categories)}
    anns = [a for a in gt.get("annotations", []) if a["category_id"] in cat_index and a["image_id"] in images]
    truths = _from_annotations(anns, images, image_index, cat_index, iou_type, truth=True)
    unknown = [r["image_id"] for r in res if r["image_id"] not in images]
    if unknown:
        raise DataError(f"results: image_id {unknown[0]!r} is not an image of the ground truth")
    res = [r for r in res if r["category_id"] in cat_index]
    detections = _from_annotations(res, images, image_index, cat_index, iou_type, truth=False)
    return _evaluate(truths, detections, categories, iou_type, max_dets)


# --- reading inputs ---------------------------------------------------------------------------------------------


def _check_iou_type(iou_type: str) -> None:
    if iou_type not in IOU_TYPES:
        raise ValueError(f"unknown iou_type {iou_type!r}; expected one of {', '.join(IOU_TYPES)}")


def _load_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None


def _numpy(x: Any, dtype: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _from_arrays(images: Sequence[dict[str, Any]], iou_type: str, box_format: str, truth: bool) -> _Objects:
    if box_format not in BOX_FORMATS:
        raise ValueError(f"unknown box format {box_format!r}; expected one of {', '.join(BOX_FORMATS)}")
    parts: dict[str, list] = {k: [] for k in ("image", "category", "boxes", "area", "score", "crowd")}
    masks: list = []
    for i, item in enumerate(images):
        boxes = _numpy(item.get("boxes", np.zeros((0, 4))), np.float64).reshape(-1, 4)
        n = len(boxes)
        labels = _numpy(item.get("labels", np.zeros(0)), np.int64).reshape(-1)
        if len(labels) != n:
            raise DataError(f"image {i}: {len(labels)} labels for {n} boxes")
        boxes = _to_xywh(boxes, box_format)
        item_masks = _item_masks(item, n, i) if iou_type == "segm" else []
        masks.extend(item_masks)
        measured = [_mask_area(m) for m in item_masks] if iou_type == "segm" else boxes[:, 2] * boxes[:, 3]
        if truth:
            crowd = _numpy(item.get("iscrowd", np.zeros(n)), bool).reshape(-1)
            area = _numpy(item.get("area", measured), np.float64).reshape(-1)
            score = np.zeros(n)
        else:
            crowd, area = np.zeros(n, dtype=bool), np.asarray(measured, dtype=np.float64)
            score = _numpy(item.get("scores", np.zeros(0)), np.float64).reshape(-1)
        for name, values in (("iscrowd", crowd), ("area", area), ("scores", score)):
            if len(values) != n:
                raise DataError(f"image {i}: {len(values)} {name} for {n} boxes")
        for key, value in zip(parts, (np.full(n, i), labels, boxes, area, score, crowd), strict=True):
            parts[key].append(value)
    joined = {key: np.concatenate(v) for key, v in parts.items()} if images else {}
    n = len(joined.get("score", ()))
    return _Objects(
        image=joined.get("image", np.zeros(0)).astype(np.int64),
        category=joined.get("category", np.zeros(0)).astype(np.int64),
        boxes=joined.get("boxes", np.zeros((0, 4))).reshape(n, 4),
        area=joined.get("area", np.zeros(0)).astype(np.float64),
        score=joined.get("score", np.zeros(0)).astype(np.float64),
        crowd=joined.get("crowd", np.zeros(0)).astype(bool),
        masks=masks if iou_type == "segm" else None,
    )


def _item_masks(item: dict[str, Any], n: int, i: int) -> list:
    if "masks" not in item:
        raise DataError(f"image {i}: segm evaluation needs 'masks' (N, H, W) or N RLEs")
    masks = item["masks"]
    if not isinstance(masks, (list, tuple)):
        array = _numpy(masks, bool)
        masks = list(array.reshape(-1, *array.shape[-2:])) if array.ndim >= 2 else []
    if len(masks) != n:
        raise DataError(f"image {i}: {len(masks)} masks for {n} boxes")
    # RLEs are read once, into uncompressed RLEs (runs); arrays stay arrays
    return [{"size": list(rle.rle_size(m)), "counts": rle.rle_runs(m)} if isinstance(m, dict) else m for m in masks]


def _from_annotations(anns: list[dict], images: dict, image_index: dict, cat_index: dict, iou_type: str,
                      truth: bool) -> _Objects:
    n = len(anns)
    masks = []
    if iou_type == "segm":  # every segmentation read once, into an uncompressed RLE (runs)
        missing = [a.get("id", j) for j, a in enumerate(anns) if "segmentation" not in a]
        if missing:
            raise DataError(f"annotation {missing[0]}: segm evaluation needs a 'segmentation'")
        sizes = [(images[a["image_id"]]["height"], images[a["image_id"]]["width"]) for a in anns]
        masks = [{"size": list(size), "counts": runs}
                 for runs, size in rle.segmentations_runs([a["segmentation"] for a in anns], sizes)]
    boxes = np.zeros((n, 4))
    for j, a in enumerate(anns):
        if "bbox" in a and len(a["bbox"]):
            boxes[j] = a["bbox"]
        elif iou_type == "bbox":
            raise DataError(f"annotation {a.get('id', j)}: bbox evaluation needs a 'bbox'")
    if truth:
        area = np.array([a.get("area", 0.0) for a in anns], dtype=np.float64)
    elif n and "bbox" in anns[0] and len(anns[0]["bbox"]):  # COCO.loadRes: results with boxes get the box's area
        area = boxes[:, 2] * boxes[:, 3]
    else:
        area = np.array([rle.area(m) for m in masks], dtype=np.float64)
    return _Objects(
        image=np.array([image_index[a["image_id"]] for a in anns], dtype=np.int64),
        category=np.array([cat_index[a["category_id"]] for a in anns], dtype=np.int64),
        boxes=boxes, area=area,
        score=np.array([a.get("score", 0.0) for a in anns], dtype=np.float64),
        crowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool) if truth else np.zeros(n, bool),
        masks=masks if iou_type == "segm" else None,
    )


def _to_xywh(boxes: np.ndarray, box_format: str) -> np.ndarray:
    if box_format == "xywh":
        return boxes
    if box_format == "cxcywh":
        return np.stack([boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2, boxes[:, 2], boxes[:, 3]], 1)
    return np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)


def _mask_area(mask: Any) -> float:
    return float(rle.area(mask)) if isinstance(mask, dict) else float(np.count_nonzero(mask))


# --- the evaluation ---------------------------------------------------------------------------------------------


def _evaluate(truths: _Objects, detections: _Objects, categories: list[int], iou_type: str,
              max_dets: Sequence[int] = MAX_DETS) -> CocoMAP:
    """COCOeval's evaluate + accumulate + summarize on truths and detections indexed by image and category."""
    max_dets = tuple(sorted(int(m) for m in max_dets))
    k = len(categories)
    # detections: by (image, category), best score first (ties in input order), cut to the largest max_dets
    order = np.lexsort((np.arange(len(detections.score)), -detections.score, detections.category, detections.image))
    pair = detections.image[order] * k + detections.category[order]
    rank = np.arange(len(order)) - np.searchsorted(pair, pair, side="left")
    dt = order[rank < max_dets[-1]]
    dt_pair, dt_rank = pair[rank < max_dets[-1]], rank[rank < max_dets[-1]]
    gt = np.lexsort((np.arange(len(truths.score)), truths.category, truths.image))
    gt_pair = truths.image[gt] * k + truths.category[gt]

    areas = np.array(list(AREA_RANGES.values()))  # (A, 2)
    gt_ignore = truths.crowd[gt][None, :] | _outside(truths.area[gt], areas)  # (A, n_gt), in gt order
    matched_gt, dt_ignore = _match_all(truths, detections, gt, gt_pair, dt, dt_pair, dt_rank, gt_ignore, iou_type)
    dt_ignore |= (matched_gt < 0) & _outside(detections.area[dt], areas)[:, None, :]
    matched = matched_gt >= 0  # (A, T, n_dt)

    n_regular = np.zeros((len(areas), k), dtype=np.int64)  # regular truths per area range and category
    for a in range(len(areas)):
        n_regular[a] = np.bincount(truths.category[gt][~gt_ignore[a]], minlength=k)
    precision, recall = _accumulate(detections.score[dt], truths_of=n_regular, category=detections.category[dt],
                                    image=detections.image[dt], rank=dt_rank, matched=matched, ignored=dt_ignore,
                                    max_dets=max_dets)
    return CocoMAP(_summarize(precision, recall, max_dets), precision, recall, list(categories), max_dets)


def _outside(area: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """(A, N): whether each area falls outside each range [lo, hi]."""
    return (area[None, :] < ranges[:, :1]) | (area[None, :] > ranges[:, 1:])


def _match_all(truths: _Objects, detections: _Objects, gt: np.ndarray, gt_pair: np.ndarray, dt: np.ndarray,
               dt_pair: np.ndarray, dt_rank: np.ndarray, gt_ignore: np.ndarray, iou_type: str
               ) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of every (image, category) that has truths and detections. Returns, per area range, IoU
    threshold and detection (in `dt` order), the index into `gt` of its truth (-1: none), and whether it is ignored
    because that truth is."""
    n_areas, n_thr = gt_ignore.shape[0], len(IOU_THRESHOLDS)
    matched_gt = np.full((n_areas, n_thr, len(dt)), -1, dtype=np.int64)
    dt_ignore = np.zeros((n_areas, n_thr, len(dt)), dtype=bool)
    pairs, n_dt = np.unique(dt_pair, return_counts=True)
    gt_pairs, gt_start, n_gt = np.unique(gt_pair, return_index=True, return_counts=True)
    has_gt = np.isin(pairs, gt_pairs)
    pairs, n_dt = pairs[has_gt], n_dt[has_gt]
    if len(pairs) == 0:
        return matched_gt, dt_ignore
    by_size = np.argsort(-n_dt, kind="stable")  # most detections first: the pairs still matching form a prefix
    pairs, n_dt = pairs[by_size], n_dt[by_size]
    where = np.searchsorted(gt_pairs, pairs)
    first_gt, n_gt = gt_start[where], n_gt[where]
    n_pairs, width, depth = len(pairs), int(n_gt.max()), int(n_dt.max())

    # padded (pair, rank, slot) tables; slot j of a pair is gt[first_gt + j]
    by_id = np.argsort(pairs)
    at = by_id[np.searchsorted(pairs, dt_pair, sorter=by_id).clip(max=n_pairs - 1)]
    dt_rows = np.where(pairs[at] == dt_pair, at, -1)  # each detection's row (-1: its pair has no truth)
    dt_pos = np.full((n_pairs, depth), -1, dtype=np.int64)
    in_pair = dt_rows >= 0
    dt_pos[dt_rows[in_pair], dt_rank[in_pair]] = np.flatnonzero(in_pair)
    slots = np.arange(width)[None, :]
    gt_pos = np.where(slots < n_gt[:, None], first_gt[:, None] + slots, -1)  # (P, G) index into gt, -1 padding
    ious = _pair_ious(truths, detections, gt, dt, dt_pos, gt_pos, iou_type)  # (P, D, G), -1 padding
    crowd = np.where(gt_pos >= 0, truths.crowd[gt][gt_pos], False)
    ignore = np.where(gt_pos[None] >= 0, gt_ignore[:, gt_pos], False)  # (A, P, G)

    taken = np.zeros((n_areas, n_pairs, n_thr, width), dtype=bool)
    thresholds = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[None, None, :, None]
    for d in range(depth):  # detections of rank d in every pair at once: (A, n, T, G)
        n = int(np.count_nonzero(n_dt > d))
        iou = ious[None, :n, d, None, :]
        ok = (~taken[:, :n] | crowd[None, :n, None, :]) & (iou >= thresholds)
        ign = ignore[:, :n, None, :]
        regular, found_regular = _last_argmax(np.where(ok & ~ign, iou, -np.inf))
        ignored, found_ignored = _last_argmax(np.where(ok & ign, iou, -np.inf))
        slot = np.where(found_regular, regular, ignored)
        found = found_regular | found_ignored
        taken[:, :n] |= found[..., None] & (np.arange(width) == slot[..., None])
        rows = np.arange(n)[None, :, None]
        target = np.where(found, gt_pos[rows, slot], -1)  # (A, n, T)
        matched_gt[:, :, dt_pos[:n, d]] = target.transpose(0, 2, 1)
        dt_ignore[:, :, dt_pos[:n, d]] = (found & ~found_regular).transpose(0, 2, 1)
    return matched_gt, dt_ignore


def _last_argmax(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the last maximum along the last axis, and whether it is finite (a candidate exists)."""
    last = values.shape[-1] - 1 - np.argmax(values[..., ::-1], axis=-1)
    return last, np.isfinite(np.take_along_axis(values, last[..., None], axis=-1)[..., 0])


def _pair_ious(truths: _Objects, detections: _Objects, gt: np.ndarray, dt: np.ndarray, dt_pos: np.ndarray,
               gt_pos: np.ndarray, iou_type: str) -> np.ndarray:
    """IoU (P, D, G) of each pair's detections (rank order) with its truths, -1 on padding."""
    ious = np.full((*dt_pos.shape, gt_pos.shape[1]), -1.0)
    if iou_type == "bbox":
        p, d, g = np.nonzero((dt_pos[:, :, None] >= 0) & (gt_pos[:, None, :] >= 0))
        det, tru = dt[dt_pos[p, d]], gt[gt_pos[p, g]]
        ious[p, d, g] = rle.box_overlaps(detections.boxes[det], truths.boxes[tru], truths.crowd[tru])
        return ious
    for p in range(len(dt_pos)):
        det, tru = dt[dt_pos[p][dt_pos[p] >= 0]], gt[gt_pos[p][gt_pos[p] >= 0]]
        masks = [detections.masks[i] for i in det] + [truths.masks[i] for i in tru]
        shapes = {tuple(m["size"]) if isinstance(m, dict) else np.shape(m) for m in masks}
        if len(shapes) != 1:
            raise DataError(f"image {int(truths.image[tru[0]])}: masks of different sizes {sorted(shapes)}")
        flat = _columns(masks)  # (D + G, H*W)
        ious[p, :len(det), :len(tru)] = rle.mask_iou(flat[:len(det)], flat[len(det):], truths.crowd[tru])
    return ious


def _columns(masks: list) -> np.ndarray:
    """Masks (uncompressed RLEs or (H, W) arrays) as (n, H*W) bool, column-major as RLEs run."""
    if all(isinstance(m, dict) for m in masks):
        return rle.runs_to_columns([m["counts"] for m in masks])
    return np.stack([rle.decode(m).T.reshape(-1) if isinstance(m, dict) else np.asarray(m).T.reshape(-1) != 0
                     for m in masks])


def _accumulate(score: np.ndarray, truths_of: np.ndarray, category: np.ndarray, image: np.ndarray,
                rank: np.ndarray, matched: np.ndarray, ignored: np.ndarray, max_dets: tuple[int, ...]
                ) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval.accumulate: precision (T, R, K, A, M) and recall (T, K, A, M), -1 where a category has no regular
    truth in the area range."""
    n_areas, n_cats = truths_of.shape
    n_thr, n_rec, n_max = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(max_dets)
    precision = -np.ones((n_thr, n_rec, n_cats, n_areas, n_max))
    recall = -np.ones((n_thr, n_cats, n_areas, n_max))
    # all images' detections of a category ranked by score; ties: image order, then rank (COCOeval's mergesort)
    order = np.lexsort((rank, image, -score, category))
    starts = np.searchsorted(category[order], np.arange(n_cats + 1))
    for k in range(n_cats):
        rows = order[starts[k]:starts[k + 1]]
        for a in range(n_areas):
            if truths_of[a, k] == 0:
                continue
            for m, max_det in enumerate(max_dets):
                kept = rows[rank[rows] < max_det]
                hit, skip = matched[a][:, kept], ignored[a][:, kept]  # (T, N)
                tp = np.cumsum(hit & ~skip, axis=1, dtype=np.float64)
                fp = np.cumsum(~hit & ~skip, axis=1, dtype=np.float64)
                rc = tp / truths_of[a, k]
                pr = tp / (fp + tp + np.spacing(1))
                n = len(kept)
                recall[:, k, a, m] = rc[:, -1] if n else 0
                pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # precision made non-increasing
                for t in range(n_thr):
                    at = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
                    precision[t, :, k, a, m] = np.where(at < n, pr[t, np.minimum(at, n - 1)] if n else 0, 0)
    return precision, recall


def _mean_defined(values: np.ndarray) -> float:
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else -1.0


def _summarize(precision: np.ndarray, recall: np.ndarray, max_dets: tuple[int, ...]) -> dict[str, float]:
    """COCOeval.summarize's twelve figures (AP over .50:.95, .50, .75, by area; AR by max_dets and by area)."""
    t50, t75 = (int(np.argmin(np.abs(IOU_THRESHOLDS - t))) for t in (0.5, 0.75))
    area = {name: i for i, name in enumerate(AREA_RANGES)}
    top = len(max_dets) - 1
    stats = {
        "map": _mean_defined(precision[:, :, :, area["all"], top]),
        "map_50": _mean_defined(precision[t50, :, :, area["all"], top]),
        "map_75": _mean_defined(precision[t75, :, :, area["all"], top]),
    }
    for name in ("small", "medium", "large"):
        stats[f"map_{name}"] = _mean_defined(precision[:, :, :, area[name], top])
    for m, max_det in enumerate(max_dets):
        stats[f"mar_{max_det}"] = _mean_defined(recall[:, :, area["all"], m])
    for name in ("small", "medium", "large"):
        stats[f"mar_{name}"] = _mean_defined(recall[:, :, area[name], top])
    return stats
