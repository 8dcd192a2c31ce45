"""Evaluation: task metrics through torchmetrics."""

from dlforge.eval.metrics import TaskMetrics, lower_is_better

__all__ = ["TaskMetrics", "lower_is_better"]
