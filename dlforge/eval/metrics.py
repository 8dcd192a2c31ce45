"""Task metrics through torchmetrics, accumulated over batches and computed once per evaluation.

    metrics = TaskMetrics("classification", num_classes=10)
    for batch in loader:
        metrics.update(model(batch), batch)
    metrics.compute()  # {"accuracy": 0.91, "precision": ..., "recall": ..., "f1": ..., "auroc": ..., ...}

Classification: accuracy (micro, i.e. the share of correct predictions), macro precision, recall and F1, macro
one-vs-rest AUROC, top-5 accuracy when there are more than 5 classes, and the confusion matrix. Regression: MAE, RMSE
and R², in the original units of the target. Keys are plain names; the caller adds the split prefix (`val/`).
"""

from __future__ import annotations

import warnings

import torch
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric, MetricCollection, R2Score
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from dlforge.layers.losses import to_probabilities
from dlforge.models.output import Output

TASKS = ("classification", "regression")
# Metrics where smaller is better; anything ending in "loss" is too.
LOWER_IS_BETTER = ("loss", "mae", "mse", "rmse", "mape", "perplexity", "ppl", "nll", "error", "wer", "cer")


def lower_is_better(metric_name: str) -> bool:
    """True for metrics to minimize (loss, mae, rmse, perplexity, ...); a split prefix like `val/` is ignored."""
    name = metric_name.rsplit("/", 1)[-1].lower()
    return name in LOWER_IS_BETTER or name.endswith("loss")


class TaskMetrics:
    """Accumulate a task's metrics over `update()` calls; `compute()` returns them as plain floats.

    Classification takes `output.logits` of shape (B, C) (or (B, 1) with `loss_name="bce"`, read as two classes) and
    `batch["y"]` class ids (B,). Regression takes (B, 1) outputs and (B,) targets, both standardized with
    `target_mean` and `target_std`; the metrics are computed after undoing that scaling.
    """

    def __init__(self, task: str, num_classes: int | None = None, loss_name: str = "cross_entropy",
                 target_mean: float = 0.0, target_std: float = 1.0):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
        if task == "classification" and num_classes is None and loss_name == "bce":
            num_classes = 2
        if task == "classification" and (num_classes is None or num_classes < 2):
            raise ValueError(f"classification needs num_classes >= 2, got {num_classes}")
        if task == "classification" and loss_name == "bce" and num_classes != 2:
            raise ValueError(f"loss 'bce' is binary: num_classes must be 2, got {num_classes}")
        self.task, self.num_classes, self.loss_name = task, num_classes, loss_name
        self.target_mean, self.target_std = target_mean, target_std
        self.updates = 0
        if task == "classification":
            self.metrics = MetricCollection(_classification_metrics(num_classes), compute_groups=False)
        else:
            self.metrics = MetricCollection({
                "mae": MeanAbsoluteError(),
                "rmse": MeanSquaredError(squared=False),
                "r2": R2Score(),
            }, compute_groups=False)

    @torch.no_grad()
    def update(self, output: Output, batch: dict[str, torch.Tensor]) -> None:
        """Add one batch: the model's `output.logits` against `batch["y"]`."""
        logits, target = output.logits.detach(), batch["y"].detach()
        if self.task == "classification":
            self.metrics.update(to_probabilities(logits, self.loss_name), target.long())  # (B, C), (B,)
        else:
            pred = logits.float().squeeze(-1) * self.target_std + self.target_mean  # (B,)
            self.metrics.update(pred, target.float() * self.target_std + self.target_mean)
        self.updates += 1

    def compute(self) -> dict[str, float]:
        """The metrics over everything since the last `reset()`; empty if nothing was added."""
        if self.updates == 0:
            return {}
        with warnings.catch_warnings():
            # Classes absent from the targets make torchmetrics warn about their ROC; `_macro_auroc` skips them.
            warnings.filterwarnings("ignore", message="No (positive|negative) samples in targets")
            values = self.metrics.compute()
        result = {}
        for name, value in values.items():
            if name == "confusion":
                continue
            if name == "auroc":
                result[name] = _macro_auroc(value, support=values["confusion"].sum(dim=1))
            else:
                result[name] = float(value)
        return result

    def confusion_matrix(self) -> list[list[int]] | None:
        """Counts with true classes as rows and predicted classes as columns; None for regression or before data."""
        if self.task != "classification" or self.updates == 0:
            return None
        return self.metrics["confusion"].compute().long().tolist()

    def reset(self) -> None:
        """Forget everything added so far."""
        self.metrics.reset()
        self.updates = 0

    def to(self, device: torch.device | str) -> TaskMetrics:
        """Move the metric states to `device` (where the logits will be); returns self."""
        self.metrics.to(device)
        return self


def _classification_metrics(num_classes: int) -> dict[str, Metric]:
    metrics: dict[str, Metric] = {
        "accuracy": MulticlassAccuracy(num_classes, average="micro"),
        "precision": MulticlassPrecision(num_classes, average="macro"),
        "recall": MulticlassRecall(num_classes, average="macro"),
        "f1": MulticlassF1Score(num_classes, average="macro"),
        "auroc": MulticlassAUROC(num_classes, average=None),  # per class; averaged over present classes in compute()
        "confusion": MulticlassConfusionMatrix(num_classes),
    }
    if num_classes > 5:
        metrics["top5_accuracy"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return metrics


def _macro_auroc(per_class: torch.Tensor, support: torch.Tensor) -> float:
    """Mean one-vs-rest AUROC over the classes present in the targets; nan if fewer than two are."""
    present = support > 0
    if int(present.sum()) < 2:
        return float("nan")
    return float(per_class[present].mean())
