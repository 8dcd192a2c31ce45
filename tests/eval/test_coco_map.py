"""COCO mAP (dlforge.eval.coco_map) against pycocotools' COCOeval on fixed files: boxes and masks, crowds, images
without objects, no predictions, more than 100 detections of one category in an image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cocotools import CATEGORIES, pycocotools_eval, synthetic_coco

from dlforge.data import rle
from dlforge.errors import DataError
from dlforge.eval.coco_map import coco_eval, coco_map

KEYS = ["map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100",
        "mar_small", "mar_medium", "mar_large"]  # COCOeval.stats, in its order


def assert_same(result, ref_stats, ref_eval):
    assert list(result.stats) == KEYS
    np.testing.assert_allclose([result.stats[k] for k in KEYS], ref_stats, atol=1e-4, rtol=0)
    np.testing.assert_allclose(result.precision, ref_eval["precision"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(result.recall, ref_eval["recall"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_equals_cocoeval_on_fixed_files(tmp_path, iou_type):
    gt, results = synthetic_coco(40, seed=7, segm=iou_type == "segm")
    assert any(a["iscrowd"] for a in gt["annotations"]) and len({a["image_id"] for a in gt["annotations"]}) < 40
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    result = coco_eval(tmp_path / "gt.json", tmp_path / "res.json", iou_type=iou_type)
    ref_stats, ref_eval = pycocotools_eval(gt, results, iou_type)
    assert_same(result, ref_stats, ref_eval)
    # the figures are not degenerate: max_dets 1 / 10 / 100 give different recalls, and a category without truths
    # is -1 in the per-category AP
    assert 0 < result.stats["mar_1"] < result.stats["mar_10"] <= result.stats["mar_100"] < 1
    assert 0 < result.stats["map"] < result.stats["map_50"] < 1
    per_category = result.ap_per_category()
    assert list(per_category) == CATEGORIES and per_category[7] == -1


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_no_predictions_and_no_objects_equal_cocoeval(iou_type):
    gt, results = synthetic_coco(12, seed=3, segm=iou_type == "segm", crowded_images=0)
    assert_same(coco_eval(gt, [], iou_type=iou_type), *pycocotools_eval(gt, [], iou_type))
    assert coco_eval(gt, [], iou_type=iou_type).stats["map"] == 0
    empty = {**gt, "annotations": []}  # images without any object: every figure is undefined, -1
    result = coco_eval(empty, results, iou_type=iou_type)
    assert_same(result, *pycocotools_eval(empty, results, iou_type))
    assert set(result.stats.values()) == {-1.0}


def test_a_hand_computed_case_through_the_array_api():
    # one image, two truths; detections best first: a hit on truth 1, a miss, a hit on truth 2
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([1, 1])}]
    predictions = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]]),
                    "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([1, 1, 1])}]
    stats = coco_map(predictions, targets).stats
    # recall 0.5 then 1.0; precision 1, 1/2, 2/3 -> monotone 1, 2/3, 2/3: 51 recall points at 1, 50 at 2/3
    assert stats["map"] == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert stats["mar_1"] == 0.5 and stats["mar_10"] == 1.0
    assert stats["map_small"] == pytest.approx(stats["map"]) and stats["map_large"] == -1


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_the_array_api_equals_the_file_api(iou_type):
    gt, results = synthetic_coco(25, seed=11, segm=iou_type == "segm")
    images = sorted(gt["images"], key=lambda img: img["id"])
    targets, predictions = [], []
    for img in images:
        anns = [a for a in gt["annotations"] if a["image_id"] == img["id"]]
        dets = [r for r in results if r["image_id"] == img["id"] and r["category_id"] in CATEGORIES]
        target = {"boxes": xyxy([a["bbox"] for a in anns]), "labels": np.array([a["category_id"] for a in anns]),
                  "iscrowd": np.array([a["iscrowd"] for a in anns]), "area": np.array([a["area"] for a in anns])}
        pred = {"labels": np.array([r["category_id"] for r in dets]), "scores": np.array([r["score"] for r in dets])}
        if iou_type == "segm":  # truths as dense masks, detections as RLEs
            target["masks"] = np.stack([rle.decode(rle.to_rle(a["segmentation"], img["height"], img["width"]))
                                        for a in anns]) if anns else np.zeros((0, img["height"], img["width"]))
            pred["masks"] = [r["segmentation"] for r in dets]
            pred["boxes"] = xyxy([rle.to_bbox(r["segmentation"]) for r in dets])
        else:
            pred["boxes"] = xyxy([r["bbox"] for r in dets])
        targets.append(target)
        predictions.append(pred)
    ours = coco_map(predictions, targets, iou_type=iou_type)
    theirs = coco_eval(gt, results, iou_type=iou_type)
    for key in KEYS:
        assert ours.stats[key] == pytest.approx(theirs.stats[key], abs=1e-4), key


def xyxy(boxes) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def test_results_on_unknown_images_and_mismatched_arrays_are_data_errors():
    gt, results = synthetic_coco(3, seed=0)
    with pytest.raises(DataError, match="image_id 12345 is not an image of the ground truth"):
        coco_eval(gt, [{**results[0], "image_id": 12345}])
    with pytest.raises(DataError, match="image 0: 1 scores for 2 boxes"):
        coco_map([{"boxes": np.zeros((2, 4)), "labels": [1, 1], "scores": [0.5]}],
                 [{"boxes": np.zeros((0, 4)), "labels": []}])
