"""Semantic segmentation metrics from a confusion matrix accumulated over every pixel of a split.

    metrics = SegmentationMetrics(num_classes=11, class_names=["background", "T-shirt/top", ...])
    metrics.update(model(batch), batch)        # logits (B, K, H, W), batch["y"] (B, H, W), -100 ignored
    metrics.compute()  # {"pixel_accuracy": .., "miou": .., "mean_dice": .., "iou_background": .., ...}

With C the K x K matrix of pixel counts (rows the true class, columns the predicted one; pixels of -100 left out):

- pixel_accuracy: trace(C) / sum(C), the share of pixels classified right (torchmetrics' micro accuracy);
- IoU of class k: C[k,k] / (row_k + col_k - C[k,k]), true positives over the union of the true and predicted
  pixels of k (Jaccard); Dice of k: 2 C[k,k] / (row_k + col_k) = 2 IoU / (1 + IoU);
- miou and mean_dice: the mean over the classes that occur in the target or the prediction of the whole split
  (a class with an empty union has no IoU, rather than a perfect or a zero one). On the canvases' test split every
  one of the 11 classes (background and the 10 Fashion-MNIST classes) occurs, so miou is the mean over 11.
  sklearn's jaccard_score(average="macro") over those classes gives the same number, and so does torchmetrics'
  MulticlassJaccardIndex(average="macro", ignore_index=-100) when every class occurs;
- iou_NAME per class that occurs (with `per_class`), NAME the class name with characters other than letters,
  digits, - and _ made _ ("iou_T-shirt_top"), so that the keys stay single path parts in metrics.jsonl and plots.

Counts accumulate as int64 in a torchmetrics `Metric` state (`dlforge.eval.tm_metrics.PixelConfusion`), so they add
up exactly over batches and processes.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from dlforge.eval.metrics import TaskMetrics


def confusion_scores(matrix: torch.Tensor) -> dict[str, Any]:
    """pixel_accuracy, per-class iou and dice (NaN where the class has an empty union), miou and mean_dice over the
    classes with a union (see the module), from a (K, K) matrix of pixel counts."""
    m = matrix.double()
    tp = m.diagonal()
    union = m.sum(dim=1) + m.sum(dim=0) - tp  # true + predicted - both
    occurs = union > 0
    iou = torch.where(occurs, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    dice = 2 * iou / (1 + iou)
    total = float(m.sum())
    return {"pixel_accuracy": float(tp.sum()) / total if total else float("nan"),
            "miou": float(iou[occurs].mean()) if occurs.any() else float("nan"),
            "mean_dice": float(dice[occurs].mean()) if occurs.any() else float("nan"),
            "iou": iou.tolist(), "dice": dice.tolist(), "pixels": m.sum(dim=1).long().tolist()}


def metric_name(class_name: str) -> str:
    """A class name as part of a metric key: letters, digits, - and _ kept, anything else _ ("T-shirt/top" ->
    "T-shirt_top")."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", class_name)


class SegmentationMetrics(TaskMetrics):
    """Pixel accuracy, mIoU, mean Dice and (with `per_class`) each class's IoU of (B, K, H, W) logits against
    (B, H, W) class maps."""

    task = "segmentation"

    def __init__(self, num_classes: int, class_names: list[str] | None = None, loss_name: str = "cross_entropy",
                 per_class: bool = True):
        if num_classes < 2:
            raise ValueError(f"segmentation needs num_classes >= 2 (background included), got {num_classes}")
        names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(num_classes)]
        if len(names) != num_classes:
            raise ValueError(f"{len(names)} class names for {num_classes} classes")
        from dlforge.eval.tm_metrics import PixelConfusion

        super().__init__(PixelConfusion(num_classes))
        self.num_classes, self.class_names, self.loss_name = num_classes, names, loss_name
        self.per_class = per_class

    def _update(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        self.metrics.update(logits.argmax(dim=1), batch["y"].detach())  # (B, H, W) each

    def scores(self) -> dict[str, Any]:
        """`confusion_scores` of everything added since the last reset."""
        return confusion_scores(self.metrics.compute())

    def compute(self) -> dict[str, float]:
        if self.updates == 0:
            return {}
        s = self.scores()
        result = {k: s[k] for k in ("pixel_accuracy", "miou", "mean_dice")}
        for name, iou in zip(self.class_names, s["iou"], strict=True):
            if self.per_class and iou == iou:  # NaN: the class occurs neither in the target nor in the prediction
                result[f"iou_{metric_name(name)}"] = iou
        return result

    def confusion_matrix(self) -> list[list[int]] | None:
        if self.updates == 0:
            return None
        return self.metrics.compute().tolist()
