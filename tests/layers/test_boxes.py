"""Box formats, IoU, GIoU, NMS and RoI Align against plain-Python references written here (torchvision's semantics,
which dlforge does not depend on)."""

from __future__ import annotations

import math

import pytest
import torch

from dlforge.layers.boxes import (
    batched_nms,
    box_convert,
    box_iou,
    generalized_box_iou,
    generalized_box_iou_loss,
    nms,
    roi_align,
    select_detections,
)


def random_boxes(n: int, seed: int, size: float = 50.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * size
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * size / 2 + 0.5
    return torch.cat([xy, xy + wh], dim=1)


# --- scalar references ------------------------------------------------------------------------------------------


def ref_iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def ref_giou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return iw * ih / union - (hull - union) / hull


def ref_nms(boxes, scores, classes, threshold) -> list[int]:
    """Brute force: walk the boxes best first; keep a box unless a kept box of its class overlaps it too much."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # sorted() is stable: ties keep input order
    kept: list[int] = []
    for i in order:
        if all(classes[k] != classes[i] or ref_iou(boxes[k], boxes[i]) <= threshold for k in kept):
            kept.append(i)
    return kept


def ref_roi_align(feat, rois, out_h, out_w, scale, sampling_ratio, aligned):
    """torchvision's roi_align CPU kernel, loop for loop."""
    _, c, height, width = feat.shape

    def bilinear(n, ch, y, x):
        if y < -1.0 or y > height or x < -1.0 or x > width:
            return 0.0
        y, x = max(y, 0.0), max(x, 0.0)
        y_low, x_low = int(y), int(x)
        if y_low >= height - 1:
            y_high = y_low = height - 1
            y = float(y_low)
        else:
            y_high = y_low + 1
        if x_low >= width - 1:
            x_high = x_low = width - 1
            x = float(x_low)
        else:
            x_high = x_low + 1
        ly, lx = y - y_low, x - x_low
        hy, hx = 1 - ly, 1 - lx
        f = feat[n, ch]
        return float(hy * hx * f[y_low, x_low] + hy * lx * f[y_low, x_high] + ly * hx * f[y_high, x_low]
                     + ly * lx * f[y_high, x_high])

    out = torch.zeros(len(rois), c, out_h, out_w, dtype=torch.float64)
    off = 0.5 if aligned else 0.0
    for k, (n, x1, y1, x2, y2) in enumerate(rois.tolist()):
        sw, sh, ew, eh = x1 * scale - off, y1 * scale - off, x2 * scale - off, y2 * scale - off
        rw, rh = ew - sw, eh - sh
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / out_h, rw / out_w
        gh = sampling_ratio if sampling_ratio > 0 else int(math.ceil(rh / out_h))
        gw = sampling_ratio if sampling_ratio > 0 else int(math.ceil(rw / out_w))
        count = max(gh * gw, 1)
        for ch in range(c):
            for ph in range(out_h):
                for pw in range(out_w):
                    total = 0.0
                    for iy in range(gh):
                        y = sh + ph * bh + (iy + 0.5) * bh / gh
                        for ix in range(gw):
                            x = sw + pw * bw + (ix + 0.5) * bw / gw
                            total += bilinear(int(n), ch, y, x)
                    out[k, ch, ph, pw] = total / count
    return out


# --- formats and IoU --------------------------------------------------------------------------------------------


def test_box_formats_convert_both_ways():
    xyxy = torch.tensor([[1.0, 2.0, 5.0, 10.0]])
    assert box_convert(xyxy, "xyxy", "xywh").tolist() == [[1.0, 2.0, 4.0, 8.0]]
    assert box_convert(xyxy, "xyxy", "cxcywh").tolist() == [[3.0, 6.0, 4.0, 8.0]]
    boxes = random_boxes(20, 0)
    for fmt in ("xywh", "cxcywh"):
        there = box_convert(boxes, "xyxy", fmt)
        torch.testing.assert_close(box_convert(there, fmt, "xyxy"), boxes)
        torch.testing.assert_close(box_convert(box_convert(there, fmt, "xywh"), "xywh", fmt), there)
    with pytest.raises(ValueError, match="unknown box format 'xy'"):
        box_convert(boxes, "xyxy", "xy")


def test_box_iou_giou_and_the_giou_loss_match_the_scalar_formulas():
    a, b = random_boxes(7, 1), random_boxes(5, 2)
    b[0] = a[0]  # identical boxes: IoU 1, GIoU 1
    b[1] = torch.tensor([200.0, 200.0, 210.0, 220.0], dtype=torch.float64)  # disjoint: GIoU < 0
    iou, giou = box_iou(a, b), generalized_box_iou(a, b)
    assert iou.shape == giou.shape == (7, 5)
    for i in range(7):
        for j in range(5):
            assert iou[i, j].item() == pytest.approx(ref_iou(a[i].tolist(), b[j].tolist()), abs=1e-12)
            assert giou[i, j].item() == pytest.approx(ref_giou(a[i].tolist(), b[j].tolist()), abs=1e-12)
    assert iou[0, 0] == 1 and giou[0, 0] == 1 and (giou[:, 1] < 0).all()
    pred, target = a[:5], b
    loss = generalized_box_iou_loss(pred, target, eps=0.0)
    torch.testing.assert_close(loss, 1 - torch.diagonal(generalized_box_iou(pred, target)))
    assert generalized_box_iou_loss(pred, target, reduction="mean").item() == pytest.approx(loss.mean().item())
    pred = pred.clone().requires_grad_(True)
    generalized_box_iou_loss(pred, target, reduction="sum").backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


# --- NMS --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_and_batched_nms_match_the_brute_force_reference(threshold):
    for seed in range(5):
        boxes = random_boxes(60, seed, size=40.0)  # crowded: many overlaps
        g = torch.Generator().manual_seed(100 + seed)
        scores = torch.rand(60, generator=g, dtype=torch.float64)
        scores[10:15] = scores[3]  # ties keep their input order
        classes = torch.randint(0, 3, (60,), generator=g)
        b, s, c = boxes.tolist(), scores.tolist(), classes.tolist()
        assert nms(boxes, scores, threshold).tolist() == ref_nms(b, s, [0] * 60, threshold)
        assert batched_nms(boxes, scores, classes, threshold).tolist() == ref_nms(b, s, c, threshold)
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []


@pytest.mark.parametrize("max_keep", [1, 5, 14, 40])
def test_nms_capped_at_k_kept_is_the_full_result_cut_at_k(max_keep):
    """Few kept of many candidates: the IoU rows of the kept boxes only (the lazy pass); else the matrix, cut."""
    for seed in range(5):
        boxes = random_boxes(60, seed, size=40.0)
        g = torch.Generator().manual_seed(100 + seed)
        scores = torch.rand(60, generator=g, dtype=torch.float64)
        scores[10:15] = scores[3]
        classes = torch.randint(0, 3, (60,), generator=g)
        full = ref_nms(boxes.tolist(), scores.tolist(), classes.tolist(), 0.5)
        assert batched_nms(boxes, scores, classes, 0.5, max_keep).tolist() == full[:max_keep]


def test_select_detections_thresholds_suppresses_per_class_and_caps_the_count():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]],
                         dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.04, 0.6])
    labels = torch.tensor([1, 1, 2, 1, 1])
    out_boxes, out_scores, out_labels = select_detections(boxes, scores, labels, score_threshold=0.05,
                                                          iou_threshold=0.5, max_detections=100)
    # box 1 is suppressed by box 0 (same class), box 2 survives (other class), box 3 is under the score threshold
    assert out_scores.tolist() == pytest.approx([0.9, 0.7, 0.6]) and out_labels.tolist() == [1, 2, 1]
    assert out_boxes[1].tolist() == [0, 0, 10, 10]
    _, capped, _ = select_detections(boxes, scores, labels, max_detections=2)
    assert capped.tolist() == pytest.approx([0.9, 0.7])


# --- RoI Align --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_roi_align_matches_the_kernel_loop_for_loop(aligned, sampling_ratio):
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 3, 9, 11, generator=g, dtype=torch.float64)
    rois = torch.tensor([
        [0, 1.3, 2.2, 7.9, 6.1],      # inside
        [1, -3.0, -2.0, 4.0, 5.5],    # crosses the top-left border
        [1, 8.0, 5.0, 30.0, 25.0],    # mostly outside (with scale 0.5: partly)
        [0, 4.0, 4.0, 4.0, 4.0],      # a point: 1x1 when not aligned, empty when aligned
        [1, 0.0, 0.0, 21.9, 17.9],    # the whole map at scale 0.5: an adaptive grid of 2-3 samples
    ], dtype=torch.float64)
    for scale in (1.0, 0.5):
        got = roi_align(feat, rois, (3, 4), spatial_scale=scale, sampling_ratio=sampling_ratio, aligned=aligned)
        want = ref_roi_align(feat, rois, 3, 4, scale, sampling_ratio, aligned)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    order = torch.cat([torch.nonzero(rois[:, 0] == i).flatten() for i in range(2)])
    torch.testing.assert_close(roi_align(feat, per_image, 3, sampling_ratio=sampling_ratio, aligned=aligned),
                               roi_align(feat, rois[order], 3, sampling_ratio=sampling_ratio, aligned=aligned))


def test_roi_align_is_differentiable_in_the_features():
    feat = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.5, 0.7, 4.2, 5.1], [0, 2.0, 1.0, 5.5, 3.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: roi_align(f, rois, 2, sampling_ratio=2, aligned=True), (feat,))
    assert roi_align(feat, torch.zeros(0, 5, dtype=torch.float64), 2).shape == (0, 2, 2, 2)
