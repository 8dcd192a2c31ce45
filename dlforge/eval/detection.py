"""COCO metrics of a detector over a split, collected batch by batch (`dlforge.eval.coco_map`, equal to COCOeval).

    metrics = DetectionMetrics("instance_segmentation", masks=True)
    for batch in loader:
        metrics.update(model(batch), batch)     # eval mode: the Output's padded detections (`DetectionOutput`)
    metrics.compute()  # {"map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10",
                       #  "mar_100", "mar_small", "mar_medium", "mar_large", and the same with "mask_" for masks}

Box figures have plain names (so `train.monitor: val/map` picks the best checkpoint by box mAP, higher is better);
mask figures start with `mask_`. -1 is COCO's "no truth in this range" (no item of the 96x96 canvases is large,
area >= 96^2, so map_large is -1 there). Truths are the batch's objects without the padding (`data.detection.unpad`),
crowd regions flagged as COCOeval flags them; class indices serve as category ids. Masks are kept as runs (RLE) so a
split of thousands of images stays small in memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dlforge.data import rle
from dlforge.data.detection import unpad
from dlforge.eval.coco_map import CocoMAP, coco_map
from dlforge.eval.metrics import TaskMetrics
from dlforge.models.output import Output


def _runs(masks: torch.Tensor) -> list[dict[str, Any]]:
    """(N, H, W) masks -> uncompressed RLEs {"size", "counts": runs}, as coco_map reads them."""
    array = masks.detach().cpu().numpy().astype(bool)
    return [{"size": [int(array.shape[1]), int(array.shape[2])], "counts": rle.mask_runs(m)} for m in array]


class DetectionMetrics(TaskMetrics):
    """COCO box mAP/mAR (and mask mAP/mAR with `masks`) of padded detections against padded truths."""

    def __init__(self, task: str = "detection", masks: bool = False, loss_name: str = ""):
        self.metrics = None  # no torchmetrics state: the detections are kept and scored at compute()
        self.task, self.masks, self.loss_name = task, masks, loss_name
        self.reset()

    @torch.no_grad()
    def update(self, output: Output, batch: dict[str, torch.Tensor]) -> None:
        if getattr(output, "boxes", None) is None:
            raise ValueError("detection metrics need the model's decoded detections (a DetectionOutput in eval mode)")
        if self.masks and getattr(output, "masks", None) is None:
            raise ValueError("mask metrics need a model with a mask head (e.g. fcos_mask)")
        keep = output.detection_mask
        for b, truth in enumerate(unpad(batch)):
            k = keep[b]
            pred = {"boxes": output.boxes[b][k].float().cpu(), "scores": output.scores[b][k].float().cpu(),
                    "labels": output.labels[b][k].cpu()}
            target = {"boxes": truth["boxes"].float().cpu(), "labels": truth["labels"].cpu(),
                      "iscrowd": truth["iscrowd"].cpu(), "area": truth["area"].float().cpu()}
            if self.masks:
                pred["masks"] = _runs(output.masks[b][k])
                target["masks"] = _runs(truth["masks"])
            self.predictions.append(pred)
            self.targets.append(target)
        self.updates += 1

    def compute(self) -> dict[str, float]:
        if self.updates == 0:
            return {}
        self.results = {"bbox": coco_map(self.predictions, self.targets, iou_type="bbox")}
        if self.masks:
            self.results["segm"] = coco_map(self.predictions, self.targets, iou_type="segm")
        out = dict(self.results["bbox"].stats)
        if self.masks:
            out.update({f"mask_{k}": v for k, v in self.results["segm"].stats.items()})
        return out

    def table(self, label_names: list[str] | None = None) -> dict[str, Any]:
        """The full COCO table of the last `compute()`: per IoU type its twelve figures and AP@[.5:.95] per class."""
        return {kind: {"stats": result.stats, "ap_per_class": _per_class(result, label_names)}
                for kind, result in self.results.items()}

    def reset(self) -> None:
        self.predictions: list[dict[str, Any]] = []
        self.targets: list[dict[str, Any]] = []
        self.results: dict[str, CocoMAP] = {}
        self.updates = 0

    def to(self, device: torch.device | str) -> DetectionMetrics:
        return self  # detections are moved to the CPU as they come


def _per_class(result: CocoMAP, names: list[str] | None) -> dict[str, float]:
    per = result.ap_per_category()
    return {(names[c] if names and 0 <= c < len(names) else str(c)): float(np.round(ap, 6)) for c, ap in per.items()}
