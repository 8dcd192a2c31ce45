"""COCO run-length encoding (dlforge.data.rle) against pycocotools.mask: the same strings, masks, areas, boxes,
polygon rasters and IoUs."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as coco_mask
import pytest

from dlforge.data import rle
from dlforge.errors import DataError

# pycocotools' decode predates numpy 2's copy keyword; its warning is about pycocotools, not about what is tested
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def random_masks(seed: int):
    """Masks of many shapes: noise, blocks, empty, full, one row or column, and long runs (multi-character counts,
    negative deltas)."""
    rng = np.random.default_rng(seed)
    for i in range(150):
        h, w = (int(v) for v in rng.integers(1, 30, size=2))
        kind = i % 5
        if kind == 0:
            m = rng.random((h, w)) < rng.random()
        elif kind == 1:
            m = np.zeros((h, w), bool)
            y, x = rng.integers(0, h), rng.integers(0, w)
            m[y:y + rng.integers(1, h + 1), x:x + rng.integers(1, w + 1)] = True
        elif kind == 2:
            m = np.full((h, w), i % 2 == 0)
        elif kind == 3:
            m = rng.random((1, w) if i % 2 else (h, 1)) < 0.5
        else:
            m = np.zeros((300, 257), bool)  # runs of tens of thousands of pixels
            m[rng.integers(0, 300):, rng.integers(0, 257):] = True
            m[: rng.integers(0, 300), :3] = True
        yield m.astype(np.uint8)


def theirs(mask: np.ndarray) -> dict:
    return coco_mask.encode(np.asfortranarray(mask))


def test_encode_decode_area_and_bbox_equal_pycocotools():
    for mask in random_masks(0):
        ref = theirs(mask)
        ours = rle.encode(mask)
        assert ours == {"size": list(mask.shape), "counts": ref["counts"].decode()}
        np.testing.assert_array_equal(rle.decode(ours), coco_mask.decode(ref))
        np.testing.assert_array_equal(rle.decode(ours), mask)
        assert rle.area(ours) == coco_mask.area(ref)
        np.testing.assert_array_equal(rle.to_bbox(ours), coco_mask.toBbox(ref))
        # uncompressed counts (COCO's crowd annotations) read the same, and compress to the same string
        uncompressed = {"size": list(mask.shape), "counts": rle.mask_runs(mask).tolist()}
        np.testing.assert_array_equal(rle.decode(uncompressed), mask)
        assert rle.compress(uncompressed)["counts"] == ref["counts"].decode()
        assert rle.to_rle(uncompressed, *mask.shape) == rle.to_rle(ref, *mask.shape) == ours


def test_polygons_rasterise_exactly_as_pycocotools():
    rng = np.random.default_rng(1)
    objects, sizes, refs = [], [], []
    for i in range(300):
        h, w = (int(v) for v in rng.integers(5, 60, size=2))
        pts = rng.random((int(rng.integers(3, 9)), 2)) * [w * 1.3, h * 1.3] - [w * 0.15, h * 0.15]  # some outside
        if i % 3 == 0:
            pts = np.round(pts)  # vertices on pixel corners: crossings that cancel
        if i % 7 == 0:
            pts = np.vstack([pts, pts[-1:]])  # a repeated vertex
        polygons = [pts.ravel().tolist()]
        if i % 5 == 0:  # an object in two parts
            polygons.append((rng.random((4, 2)) * [w, h]).ravel().tolist())
        ref = coco_mask.merge(coco_mask.frPyObjects(polygons, h, w))
        assert rle.from_polygons(polygons, h, w)["counts"] == ref["counts"].decode(), i
        assert rle.to_rle(polygons, h, w)["counts"] == ref["counts"].decode()
        objects.append(polygons)
        sizes.append((h, w))
        refs.append(ref)
    # all of them at once (one vectorised pass, as the readers and the mAP evaluation do), with RLEs among them
    objects += [{"size": r["size"], "counts": r["counts"].decode()} for r in refs[:20]]
    sizes += sizes[:20]
    refs += refs[:20]
    for (runs, size), ref in zip(rle.segmentations_runs(objects, sizes), refs, strict=True):
        assert size == tuple(ref["size"]) and rle.runs_to_string(runs) == ref["counts"].decode()
    same_size = [runs for runs, size in rle.segmentations_runs(objects, sizes) if size == sizes[0]]
    columns = rle.runs_to_columns(same_size)
    for row, runs in zip(columns, same_size, strict=True):
        np.testing.assert_array_equal(row.reshape(sizes[0][::-1]).T, rle.runs_to_mask(runs, *sizes[0]))


def test_iou_of_masks_and_boxes_with_crowds_equals_pycocotools():
    rng = np.random.default_rng(2)
    for _ in range(40):
        dt = [theirs((rng.random((20, 30)) < 0.3).astype(np.uint8)) for _ in range(int(rng.integers(1, 5)))]
        gt = [theirs((rng.random((20, 30)) < 0.3).astype(np.uint8)) for _ in range(int(rng.integers(1, 5)))]
        crowd = rng.integers(0, 2, size=len(gt)).tolist()
        as_str = [{"size": r["size"], "counts": r["counts"].decode()} for r in (*dt, *gt)]
        np.testing.assert_array_equal(rle.iou(as_str[:len(dt)], as_str[len(dt):], crowd),
                                      coco_mask.iou(dt, gt, crowd))
        dt_boxes, gt_boxes = rng.random((6, 4)) * 20, rng.random((len(gt), 4)) * 20
        np.testing.assert_array_equal(rle.box_iou(dt_boxes, gt_boxes, crowd),
                                      coco_mask.iou(dt_boxes.tolist(), gt_boxes.tolist(), crowd))
    assert rle.iou([], [rle.encode(np.ones((2, 2)))], [0]).shape == (0, 1)


def test_malformed_rles_are_data_errors():
    with pytest.raises(DataError, match="runs sum to 5 pixels, the size 2x3 has 6"):
        rle.decode({"size": [2, 3], "counts": [2, 3]})
    with pytest.raises(DataError, match="characters must be in '0'..'o'"):
        rle.decode({"size": [2, 3], "counts": "6~"})
    with pytest.raises(DataError, match="a list of polygons or an RLE"):
        rle.to_rle("not a segmentation", 2, 3)
    with pytest.raises(DataError, match="x, y pairs of at least 3 points, got 5 numbers"):
        rle.to_rle([[1, 2, 3, 4, 5]], 10, 10)
