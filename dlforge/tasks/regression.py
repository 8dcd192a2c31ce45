"""Regression: a number per sample (tabular rows), reported in the target's own units.

Metrics: MAE, RMSE, R² (`dlforge.eval.metrics.RegressionMetrics`). Predict: a CSV/Parquet file of feature rows to a
value per row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dlforge.eval.metrics import RegressionMetrics
from dlforge.registry import register_task
from dlforge.tasks.base import Task, choose_loss
from dlforge.tasks.inputs import input_usage, predict_logits


@register_task("regression")
class Regression(Task):
    """A number per sample."""

    name = "regression"

    def metric_set(self, target_mean: float = 0.0, target_std: float = 1.0, loss_name: str = "mse"
                   ) -> RegressionMetrics:
        return RegressionMetrics(target_mean, target_std, loss_name)

    def metrics(self, info: dict[str, Any], loss_name: str = "", split: str = "val") -> RegressionMetrics:
        return RegressionMetrics(info.get("target_mean", 0.0), info.get("target_std", 1.0), loss_name)

    def model_options(self, user: dict[str, Any], fields: set[str], info: dict[str, Any], data_name: str
                      ) -> dict[str, Any]:
        return choose_loss(self.name, user, fields, info, data_name)

    def predict(self, model: torch.nn.Module, input_path: Path) -> list[dict[str, Any]]:
        """The predicted value of each row of a CSV/Parquet file, in the target's units."""
        from dlforge.data.tabular import unscale_target

        pre = model.meta["extra"]["preprocessing.json"]
        logits, keys = predict_logits(model, input_path)
        values = unscale_target(pre, logits.squeeze(-1))
        return [{**key, "prediction": float(v)} for key, v in zip(keys, values.tolist(), strict=True)]

    def predict_input(self, preprocessing: dict[str, Any]) -> tuple[str, str] | None:
        usage = input_usage(preprocessing)
        if usage is None:
            return None
        return usage[0], f"{usage[1]}; gives the predicted {preprocessing.get('target', 'value')} per row"
