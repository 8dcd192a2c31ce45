"""FCOS and its mask head: target assignment, decoding through class-aware NMS, mask pasting against a brute-force
reference, a tiny overfit whose detections match the truth, and the transfer of a ResNet run's backbone.
(Every registered model's forward and backward: tests/models/test_models.py.)"""

from __future__ import annotations

import math

import numpy as np
import torch

from dlforge.layers.boxes import box_iou
from dlforge.models.fcos import centerness, fcos_targets, grid_points
from dlforge.models.fcos_mask import paste_masks
from dlforge.registry import create_model
from dlforge.train import transfer

TINY = {"layers": [1, 1, 1], "width": 8, "dim": 16, "head_convs": 1, "num_classes": 3, "image_size": 32}


def test_grid_points_are_the_cell_centres():
    points = grid_points(2, 3, 8)
    assert points.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]


def test_a_location_inside_a_box_gets_that_box_the_smallest_on_overlap_padding_and_crowds_ignored():
    points = torch.tensor([[10.0, 10.0], [30.0, 30.0], [50.0, 50.0], [70.0, 70.0], [20.0, 20.0]])
    strides = torch.full((5,), 8.0)
    ranges = torch.tensor([[0.0, math.inf]]).expand(5, 2)
    boxes = torch.tensor([[[0.0, 0.0, 40.0, 40.0],     # big box around points 0, 1 (and 4)
                           [15.0, 15.0, 25.0, 25.0],   # small box on point 4: it wins there
                           [40.0, 40.0, 60.0, 60.0],   # a crowd around point 2
                           [60.0, 60.0, 80.0, 80.0]]])  # padding around point 3
    box_mask = torch.tensor([[True, True, True, False]])
    iscrowd = torch.tensor([[False, False, True, False]])
    matched, ignored = fcos_targets(points, strides, ranges, boxes, box_mask, iscrowd, center_radius=100.0)
    assert matched.tolist() == [[0, 0, -1, -1, 1]]
    assert ignored.tolist() == [[False, False, True, False, False]]  # background in a crowd: no class loss

    # center sampling: within one stride (8 px) of the big box's centre (20, 20) only: points 0 and 1 are 10 px off
    matched, _ = fcos_targets(points, strides, ranges, boxes[:, :1], box_mask[:, :1], iscrowd[:, :1], 1.0)
    assert matched.tolist() == [[-1, -1, -1, -1, 0]]
    # the level's range: the largest distance to a side must lie in [low, high)
    ranges = torch.tensor([[0.0, 25.0]]).expand(5, 2)
    matched, _ = fcos_targets(points, strides, ranges, boxes[:, :1], box_mask[:, :1], iscrowd[:, :1], 100.0)
    assert matched.tolist() == [[-1, -1, -1, -1, 0]]  # point 4: distances 20, 20, 20, 20; point 0: 30; point 1: 30


def test_centerness_is_one_at_the_centre_and_falls_off():
    assert torch.allclose(centerness(torch.tensor([[5.0, 5.0, 5.0, 5.0], [1.0, 4.0, 9.0, 4.0]])),
                          torch.tensor([1.0, 1 / 3]))


def test_decode_gives_the_boxes_of_a_hand_built_head_output_through_class_aware_nms():
    model = create_model("fcos", **TINY, score_threshold=0.3, nms_iou=0.5, max_detections=10).eval()
    points = torch.tensor([[8.0, 8.0], [10.0, 8.0], [24.0, 24.0], [10.0, 10.0]])
    big = 10.0  # logit of a sure class
    cls = torch.full((4, 3), -big)
    cls[0, 1], cls[1, 1], cls[2, 2], cls[3, 2] = big, 0.0, big, big  # location 1 scores 0.5 for class 1
    ltrb = torch.tensor([[4.0, 4.0, 4.0, 4.0], [6.0, 4.0, 2.0, 4.0], [4.0, 4.0, 40.0, 4.0], [6.0, 6.0, 2.0, 2.0]])
    ctr = torch.full((4,), big)
    boxes, scores, labels = model.decode(cls, ltrb, ctr, points, (32, 32))
    # location 1 is the same box as location 0 (IoU 1) and of its class: suppressed; location 3 overlaps location 0
    # as much but is another class: kept; location 2's box is clipped to the image's right edge
    assert labels.tolist() == [1, 2, 2]
    expected = torch.tensor([[4.0, 4.0, 12.0, 12.0], [20.0, 20.0, 32.0, 28.0], [4.0, 4.0, 12.0, 12.0]])
    order = [0, 1, 2] if torch.equal(boxes[1], expected[1]) else [0, 2, 1]  # equal scores: either order
    assert torch.allclose(boxes, expected[order])
    assert torch.allclose(scores, torch.full((3,), 1.0), atol=1e-4)


def brute_force_paste(mask: np.ndarray, box: list[float], height: int, width: int) -> np.ndarray:
    """Each pixel centre's bilinear sample of the S x S map stretched over the box (0 beyond the map), 0 outside."""
    s = mask.shape[0]
    x1, y1, x2, y2 = box
    out = np.zeros((height, width))
    padded = np.pad(mask, 1)  # zeros around the map: what lies past its edge cells
    for i in range(height):
        for j in range(width):
            px, py = j + 0.5, i + 0.5
            if not (x1 <= px <= x2 and y1 <= py <= y2):
                continue
            u = (px - x1) / (x2 - x1) * s - 0.5 + 1  # in the padded map's cells
            v = (py - y1) / (y2 - y1) * s - 0.5 + 1
            u0, v0 = math.floor(u), math.floor(v)
            fu, fv = u - u0, v - v0
            value = 0.0
            for dv, wv in ((0, 1 - fv), (1, fv)):
                for du, wu in ((0, 1 - fu), (1, fu)):
                    value += wv * wu * padded[v0 + dv, u0 + du]
            out[i, j] = value
    return out


def test_pasted_masks_match_a_brute_force_bilinear_paste():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(3, 6, 6, generator=g)
    boxes = torch.tensor([[2.0, 3.0, 14.0, 11.0], [0.0, 0.0, 20.0, 16.0], [7.5, 1.25, 12.5, 9.75]])
    soft = paste_masks(probs, boxes, 16, 20, threshold=None)
    for k in range(3):
        np.testing.assert_allclose(soft[k].numpy(), brute_force_paste(probs[k].numpy(), boxes[k].tolist(), 16, 20),
                                   atol=1e-5)
    hard = paste_masks(probs, boxes, 16, 20)
    assert hard.dtype == torch.bool and torch.equal(hard, soft >= 0.5)
    assert paste_masks(probs[:0], boxes[:0], 16, 20).shape == (0, 16, 20)


def two_images() -> dict[str, torch.Tensor]:
    """Two 32x32 images: bright squares of class 0 and 2 on a dark background, boxes padded to two slots."""
    x = torch.full((2, 1, 32, 32), -1.0)
    boxes = torch.tensor([[[4.0, 6.0, 20.0, 22.0], [0.0, 0.0, 0.0, 0.0]],
                          [[10.0, 2.0, 30.0, 18.0], [2.0, 20.0, 14.0, 30.0]]])
    labels = torch.tensor([[0, -1], [2, 1]])
    box_mask = labels >= 0
    masks = torch.zeros(2, 2, 32, 32, dtype=torch.bool)
    for b in range(2):
        for m in range(2):
            if box_mask[b, m]:
                x1, y1, x2, y2 = (int(v) for v in boxes[b, m])
                masks[b, m, y1:y2, x1:x2] = True
                x[b, 0, y1:y2, x1:x2] = 1.0 + labels[b, m]  # each class its own brightness
    return {"x": x, "boxes": boxes, "labels": labels, "box_mask": box_mask,
            "iscrowd": torch.zeros_like(box_mask), "area": masks.flatten(2).sum(-1).float(), "masks": masks}


def test_a_tiny_mask_detector_overfits_two_images_and_finds_their_objects(one_thread):
    torch.manual_seed(0)
    model = create_model("fcos_mask", **TINY, strides=[8], level_bounds=[], mask_stride=4, mask_size=8,
                         mask_convs=1, jitter=0.0)
    batch = two_images()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(40):  # 40 steps: the loss falls to ~0.23 of its start, the boxes' IoU with the truth >= 0.87
        loss = model(batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and np.mean(losses[-5:]) < 0.3 * np.mean(losses[:5])
    out = model.eval()({"x": batch["x"]})
    assert out.loss is None and out.masks.shape[-2:] == (32, 32)
    for b in range(2):
        truth = batch["boxes"][b][batch["box_mask"][b]]
        best = out.detection_mask[b] & (out.scores[b] > 0.3)
        iou = box_iou(truth, out.boxes[b][best])  # (truths, detections)
        assert (iou.max(dim=1).values > 0.5).all(), (truth, out.boxes[b][best])
        assert torch.equal(out.labels[b][best][iou.argmax(dim=1)], batch["labels"][b][batch["box_mask"][b]])


def test_a_resnet_runs_backbone_loads_into_the_detector():
    torch.manual_seed(0)
    resnet = create_model("resnet18", layers=[1, 1, 1], width=8, stem="imagenet", num_classes=10)
    detector = create_model("fcos", **TINY)
    copied = transfer.load_backbone(detector, resnet)
    assert copied and all(k.split(".")[0] in ("stem", "stage1", "stage2", "stage3") for k in copied)
    for key in copied:
        assert torch.equal(detector.state_dict()[key], resnet.state_dict()[key])
    assert transfer.stage_names(detector) == ["stem", "stage1", "stage2", "stage3", "head"]
