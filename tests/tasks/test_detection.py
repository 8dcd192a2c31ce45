"""Detection and instance segmentation through the CLI, in process: train on tiny Fashion-MNIST canvases, the report
(plots/detections.png, the COCO table in eval.json), `dlforge eval --json`, and `dlforge predict --json` in the
pixels of the image given (boxes, class names, scores, RLE masks of the image's size), with a bad input refused in
one line. The metrics' own numbers are COCOeval's (tests/eval/test_coco_map.py); here they are wired through."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from clitools import ok_json, one_line_error, run_here

from dlforge import api
from dlforge.config import load_config
from dlforge.data import rle
from dlforge.data.images import FASHION_LABELS
from dlforge.eval.detection import DetectionMetrics
from dlforge.models.output import DetectionOutput

BOX_KEYS = {"map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100"}
TINY = ["data.n_train=16", "data.n_val=4", "data.n_test=4", "data.size=48", "data.scale=[0.8,1.5]",
        "data.background=plain", "model.layers=[1,1,1]", "model.width=8", "model.dim=16", "model.head_convs=1",
        "train.max_steps=2", "train.max_epochs=null", "train.warmup_steps=0", "train.batch_size=8",
        "train.progress=false", "train.tensorboard=false", "train.eval_every=2", "train.checkpoint_every=2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    """A detector and a mask detector, each trained 2 steps on 16 canvases of 48x48 (the canvases cached once), as
    `dlforge train PRESET OVERRIDES` trains them (the command only parses and prints)."""
    d = tmp_path_factory.mktemp("detection")
    made = {}
    for preset, extra in (("canvas-detector", []), ("canvas-maskdet", ["model.mask_convs=1", "model.mask_size=8"])):
        config = load_config(preset, [*TINY, *extra, f"data.cache_dir={d / 'cache'}", f"runs_dir={d / 'runs'}"])
        made[preset] = str(api.train(config).run_dir)
    return made


@pytest.mark.parametrize(("preset", "masks"), [("canvas-detector", False), ("canvas-maskdet", True)])
def test_train_writes_the_coco_table_and_the_detections_plot(runs, preset, masks):
    from pathlib import Path

    run = Path(runs[preset])
    assert (run / "plots" / "detections.png").stat().st_size > 0
    report = json.loads((run / "eval.json").read_text())
    assert BOX_KEYS <= set(report["test"]) and ("mask_map" in report["test"]) == masks
    table = report["test_coco"]
    assert set(table) == ({"bbox", "segm"} if masks else {"bbox"})
    assert table["bbox"]["stats"]["map"] == pytest.approx(report["test"]["map"])
    assert set(table["bbox"]["ap_per_class"]) <= set(FASHION_LABELS)
    signature = json.loads((run / "model" / "signature.json").read_text())
    names = [o["name"] for o in signature["outputs"]]
    assert names[:5] == ["logits", "boxes", "scores", "labels", "detection_mask"] and ("masks" in names) == masks
    assert signature["outputs"][1]["shape"] == [-1, -1, 4]
    card = (run / "README.md").read_text()
    assert "dlforge predict" in card and "boxes" in card


@pytest.mark.parametrize("preset", ["canvas-detector", "canvas-maskdet"])
def test_eval_json_prints_the_coco_figures(runs, preset, capsys):
    metrics = ok_json(run_here(capsys, "eval", runs[preset], "--json"))["metrics"]
    assert BOX_KEYS <= set(metrics) and all(-1 <= metrics[k] <= 1 for k in BOX_KEYS)
    assert ("mask_map" in metrics) == (preset == "canvas-maskdet")


def test_predict_json_gives_boxes_labels_scores_and_rle_masks_in_the_images_pixels(runs, tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(rng.integers(0, 255, (72, 120), dtype=np.uint8)).save(folder / "wide.png")  # not 48x48
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(folder / "rgb.png")
    rows = ok_json(run_here(capsys, "predict", runs["canvas-maskdet"], str(folder), "--json"))
    assert [r["image"].rsplit("/", 1)[-1] for r in rows] == ["rgb.png", "wide.png"]
    for row, (h, w) in zip(rows, [(48, 48), (72, 120)], strict=True):
        assert (row["height"], row["width"]) == (h, w)
        n = len(row["boxes"])
        assert len(row["labels"]) == len(row["scores"]) == len(row["masks"]) == n
        assert set(row["labels"]) <= set(FASHION_LABELS)
        for box, mask in zip(row["boxes"], row["masks"], strict=True):
            assert 0 <= box[0] <= box[2] <= w and 0 <= box[1] <= box[3] <= h
            decoded = rle.decode(mask)
            assert decoded.shape == (h, w)
            ys, xs = np.nonzero(decoded)  # a pasted mask stays in its box
            assert not len(xs) or (xs.min() >= box[0] - 1 and xs.max() <= box[2] and ys.max() <= box[3])

    rows = ok_json(run_here(capsys, "predict", runs["canvas-detector"], str(folder / "wide.png"), "--json"))
    assert len(rows) == 1 and "masks" not in rows[0] and rows[0]["width"] == 120


def test_predict_on_a_file_that_is_not_an_image_is_one_line_exit_2(runs, tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    line = one_line_error(run_here(capsys, "predict", runs["canvas-detector"], str(bad), "--json"))
    assert "notes.png" in line and "cannot read the image" in line


def test_a_classifier_on_detection_data_and_a_detector_without_masks_are_refused(tmp_path, capsys):
    data = {"name": "fashion_canvases", "task": "detection", "n_train": 16, "n_val": 4, "n_test": 4, "size": 48,
            "scale": [0.8, 1.5], "background": "plain", "cache_dir": str(tmp_path)}
    config = tmp_path / "classifier.yaml"
    config.write_text(json.dumps({"data": data, "model": {"name": "resnet20"}, "train": {"max_steps": 1}}))
    line = one_line_error(run_here(capsys, "train", str(config)))
    assert "needs a detector" in line
    line = one_line_error(run_here(capsys, "train", "canvas-maskdet", "model.name=fcos", *TINY[:6],
                                   f"data.cache_dir={tmp_path}"))
    assert "mask head" in line


def test_metrics_score_perfect_detections_one_and_ignore_padding():
    boxes = torch.tensor([[[2.0, 2.0, 20.0, 30.0], [0.0, 0.0, 0.0, 0.0]], [[5.0, 5.0, 40.0, 25.0], [1, 1, 9, 9]]])
    labels = torch.tensor([[3, -1], [1, 0]])
    box_mask = labels >= 0
    masks = torch.zeros(2, 2, 48, 48, dtype=torch.bool)
    masks[0, 0, 2:30, 2:20] = masks[1, 0, 5:25, 5:40] = masks[1, 1, 1:9, 1:9] = True
    batch = {"boxes": boxes, "labels": labels, "box_mask": box_mask, "iscrowd": torch.zeros_like(box_mask),
             "area": masks.flatten(2).sum(-1).float(), "masks": masks}
    out = DetectionOutput(logits=torch.zeros(2, 1), boxes=boxes, scores=torch.tensor([[0.9, 0.0], [0.8, 0.7]]),
                          labels=labels, detection_mask=box_mask, masks=masks)
    metrics = DetectionMetrics("instance_segmentation", masks=True)
    metrics.update(out, batch)
    result = metrics.compute()
    assert result["map"] == pytest.approx(1.0) and result["mask_map"] == pytest.approx(1.0)
    assert result["map_large"] == -1  # no object of 96^2 pixels or more
    metrics.reset()
    assert metrics.compute() == {}
