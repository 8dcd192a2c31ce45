"""Boxes for detection: formats, IoU and GIoU, non-maximum suppression, and RoI Align, in torch.

Boxes are (N, 4) float tensors in pixel units; `xyxy` (corners, the default everywhere), `xywh` (top-left corner and
size, COCO's) or `cxcywh` (centre and size). The semantics are torchvision.ops' (`box_iou`, `generalized_box_iou`,
`generalized_box_iou_loss`, `nms`, `batched_nms`, `roi_align`), written here so that dlforge needs no torchvision.

    keep = batched_nms(boxes, scores, labels, iou_threshold=0.5)          # per-class NMS, best score first
    boxes, scores, labels = select_detections(boxes, scores, labels, score_threshold=0.05, max_detections=100)
    crops = roi_align(features, rois, output_size=7, spatial_scale=1 / 8, sampling_ratio=2, aligned=True)

COCO's own IoU (xywh boxes, crowd regions, float64 in pycocotools' order of operations) is `dlforge.data.rle.box_iou`,
used by the mAP evaluation.
"""

from __future__ import annotations

import numpy as np
import torch

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")
LAZY_ROWS = 4  # NMS capped at k kept computes IoU rows lazily when k * this < the candidates (else one matrix)


# --- formats ----------------------------------------------------------------------------------------------------


def box_convert(boxes: torch.Tensor, in_fmt: str, out_fmt: str) -> torch.Tensor:
    """Boxes (..., 4) from one format to another (xyxy, xywh, cxcywh)."""
    for fmt in (in_fmt, out_fmt):
        if fmt not in BOX_FORMATS:
            raise ValueError(f"unknown box format {fmt!r}; expected one of {', '.join(BOX_FORMATS)}")
    if in_fmt == out_fmt:
        return boxes.clone()
    a, b, c, d = boxes.unbind(-1)
    if in_fmt == "xywh":
        a, b, c, d = a, b, a + c, b + d
    elif in_fmt == "cxcywh":
        a, b, c, d = a - c / 2, b - d / 2, a + c / 2, b + d / 2
    # (a, b, c, d) is now x1, y1, x2, y2
    if out_fmt == "xywh":
        return torch.stack([a, b, c - a, d - b], dim=-1)
    if out_fmt == "cxcywh":
        return torch.stack([(a + c) / 2, (b + d) / 2, c - a, d - b], dim=-1)
    return torch.stack([a, b, c, d], dim=-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas (...,) of xyxy boxes (..., 4)."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


# --- IoU --------------------------------------------------------------------------------------------------------


def _overlap(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Intersection, union and enclosing-box area of broadcastable xyxy boxes a (..., 4) and b (..., 4)."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a) + box_area(b) - inter
    enclosing = (torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])).clamp(min=0)
    return inter, union, enclosing[..., 0] * enclosing[..., 1]


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU (N, M) of xyxy boxes a (N, 4) and b (M, 4)."""
    inter, union, _ = _overlap(a[:, None, :], b[None, :, :])
    return inter / union


def generalized_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise GIoU (N, M) (Rezatofighi et al. 2019): IoU minus the share of the enclosing box outside the union."""
    inter, union, enclosing = _overlap(a[:, None, :], b[None, :, :])
    return inter / union - (enclosing - union) / enclosing


def generalized_box_iou_loss(pred: torch.Tensor, target: torch.Tensor, reduction: str = "none",
                             eps: float = 1e-7) -> torch.Tensor:
    """1 - GIoU of matched xyxy boxes pred (N, 4) and target (N, 4), as torchvision's `generalized_box_iou_loss`."""
    inter, union, enclosing = _overlap(pred, target)
    loss = 1 - (inter / (union + eps) - (enclosing - union) / (enclosing + eps))
    if reduction == "mean":
        return loss.mean() if loss.numel() else loss.sum()
    if reduction == "sum":
        return loss.sum()
    if reduction != "none":
        raise ValueError(f"unknown reduction {reduction!r}; expected none, mean or sum")
    return loss


# --- non-maximum suppression ------------------------------------------------------------------------------------


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes kept, best score first: each box suppresses the lower-scored ones with IoU above the
    threshold (greedy, as torchvision's `nms`; equal scores keep their input order)."""
    return _greedy_nms(boxes, scores, None, iou_threshold)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor,
                iou_threshold: float, max_keep: int | None = None) -> torch.Tensor:
    """Class-aware NMS: a box suppresses only boxes of its own class. Indices kept, best score first; with
    `max_keep`, the first `max_keep` of them (the same as cutting the full result, found sooner)."""
    return _greedy_nms(boxes, scores, classes, iou_threshold, max_keep)


def _greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor | None,
                iou_threshold: float, max_keep: int | None = None) -> torch.Tensor:
    order = torch.sort(scores, descending=True, stable=True).indices
    if len(order) == 0:
        return order
    b = boxes[order].float()
    c = classes[order] if classes is not None else None
    if max_keep is not None and max_keep * LAZY_ROWS < len(order):
        return order[_greedy_lazy(b, c, iou_threshold, max_keep)]
    over = box_iou(b, b) > iou_threshold  # (N, N), in score order
    if c is not None:
        over &= c[:, None] == c[None, :]  # one IoU matrix; pairs of different classes never suppress
    over = over.cpu().numpy()
    alive = np.ones(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):  # one pass, best first; row i matters only when box i survives
        if alive[i]:
            keep.append(i)
            alive[i + 1:] &= ~over[i, i + 1:]
    return order[torch.as_tensor(keep[:max_keep], dtype=torch.long, device=order.device)]


def _greedy_lazy(b: torch.Tensor, c: torch.Tensor | None, iou_threshold: float, max_keep: int) -> torch.Tensor:
    """The greedy pass over boxes b (N, 4) in score order, stopped at `max_keep` kept: only the kept boxes' IoU
    rows are computed (max_keep x N instead of N x N; an untrained detector's 1,000 candidates for 20 kept)."""
    alive = torch.ones(len(b), dtype=torch.bool, device=b.device)
    keep: list[int] = []
    i = 0
    while len(keep) < max_keep:
        rest = alive[i:].nonzero()
        if len(rest) == 0:
            break
        i += int(rest[0])
        keep.append(i)
        over = box_iou(b[i:i + 1], b[i + 1:])[0] > iou_threshold
        if c is not None:
            over &= c[i + 1:] == c[i]
        alive[i + 1:] &= ~over
        i += 1
    return torch.as_tensor(keep, dtype=torch.long, device=b.device)


def select_detections(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, score_threshold: float = 0.05,
                      iou_threshold: float = 0.5, max_detections: int = 100
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's final detections: scores above `score_threshold`, class-aware NMS, the best `max_detections`
    (best score first)."""
    above = scores > score_threshold
    boxes, scores, labels = boxes[above], scores[above], labels[above]
    keep = batched_nms(boxes, scores, labels, iou_threshold, max_detections)
    return boxes[keep], scores[keep], labels[keep]


# --- RoI Align --------------------------------------------------------------------------------------------------


def roi_align(features: torch.Tensor, boxes: torch.Tensor | list[torch.Tensor], output_size: int | tuple[int, int],
              spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = False) -> torch.Tensor:
    """RoI Align (He et al. 2017, Mask R-CNN) with torchvision's `roi_align` semantics: features (N, C, H, W),
    boxes (K, 5) [image index, x1, y1, x2, y2] or a list of (K_i, 4) per image, in input pixels (times
    `spatial_scale` gives feature pixels) -> (K, C, out_h, out_w).

    Each output bin averages `sampling_ratio`^2 bilinear samples at regular points (adaptive, ceil(roi / bins) per
    axis, when <= 0). `aligned=True` shifts the box by -0.5 so that pixel centres line up (Detectron2's choice);
    `aligned=False` is the original, which also makes every box at least 1x1. Samples more than one pixel outside
    the map are 0. Differentiable with respect to `features`.
    """
    rois = _as_rois(boxes, features)
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    n, c, h, w = features.shape
    if len(rois) == 0:
        return features.new_zeros(0, c, out_h, out_w)
    offset = 0.5 if aligned else 0.0
    start = rois[:, 1:3] * spatial_scale - offset  # (K, 2) x, y
    size = rois[:, 3:5] * spatial_scale - offset - start
    if not aligned:
        size = size.clamp(min=1.0)
    if sampling_ratio > 0:
        grid = torch.full_like(size, sampling_ratio, dtype=torch.long)
    else:
        grid = torch.ceil(size / size.new_tensor([out_w, out_h])).long().clamp(min=0)
    ys, wy_low, wy_high, y_low, y_high = _axis_samples(start[:, 1], size[:, 1], grid[:, 1], out_h, h)
    xs, wx_low, wx_high, x_low, x_high = _axis_samples(start[:, 0], size[:, 0], grid[:, 0], out_w, w)
    flat = features.permute(0, 2, 3, 1).reshape(n * h * w, c)  # (N*H*W, C): one row per feature-map pixel
    base = rois[:, 0].long()[:, None, None] * (h * w)  # (K, 1, 1)
    out = 0
    for wy, yi in ((wy_low, y_low), (wy_high, y_high)):
        for wx, xi in ((wx_low, x_low), (wx_high, x_high)):
            weight = (wy[:, :, None] * wx[:, None, :]).to(features.dtype)  # (K, Sy, Sx)
            index = base + yi[:, :, None] * w + xi[:, None, :]
            out = out + weight[..., None] * flat[index]  # (K, Sy, Sx, C)
    k = len(rois)
    gy, gx = ys.shape[1] // out_h, xs.shape[1] // out_w
    out = out.reshape(k, out_h, gy, out_w, gx, c).sum(dim=(2, 4))  # sum the samples of each bin
    count = (grid[:, 0] * grid[:, 1]).clamp(min=1).to(features.dtype)
    return out.permute(0, 3, 1, 2) / count[:, None, None, None]


def _as_rois(boxes: torch.Tensor | list[torch.Tensor], features: torch.Tensor) -> torch.Tensor:
    if isinstance(boxes, (list, tuple)):
        parts = [torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)]
        boxes = torch.cat(parts) if parts else features.new_zeros(0, 5)
    if boxes.ndim != 2 or boxes.shape[1] != 5:
        raise ValueError(f"roi_align: boxes must be (K, 5) [index, x1, y1, x2, y2] or a list of (K_i, 4), got "
                         f"{tuple(boxes.shape)}")
    return boxes.to(features.dtype)


def _axis_samples(start: torch.Tensor, size: torch.Tensor, grid: torch.Tensor, bins: int, length: int):
    """Sample points along one axis, (K, bins * G) with G = the largest grid, and their bilinear corners and weights
    (0 for padding points beyond a box's own grid and for points more than a pixel outside the map)."""
    g = max(int(grid.max()), 1)
    step = size / bins  # (K,) bin size
    sub = torch.arange(g, dtype=size.dtype, device=size.device)
    per_bin = grid.clamp(min=1).to(size.dtype)[:, None]  # (K, 1)
    # y = start + bin * bin_size + (i + 0.5) * bin_size / grid, as torchvision's kernel computes it
    offsets = (sub[None, :] + 0.5) * step[:, None] / per_bin  # (K, G)
    pos = start[:, None, None] + torch.arange(bins, dtype=size.dtype, device=size.device)[None, :, None] * \
        step[:, None, None] + offsets[:, None, :]  # (K, bins, G)
    used = (sub[None, None, :] < grid[:, None, None]).expand_as(pos)
    pos, used = pos.reshape(len(start), -1), used.reshape(len(start), -1)
    inside = used & (pos >= -1.0) & (pos <= length)
    pos = pos.clamp(min=0)
    low = pos.floor().long()
    last = low >= length - 1
    low = torch.where(last, length - 1, low)
    high = torch.where(last, low, low + 1)
    frac = torch.where(last, torch.zeros_like(pos), pos - low)
    return pos, (1 - frac) * inside, frac * inside, low, high

