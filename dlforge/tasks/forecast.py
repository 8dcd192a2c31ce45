"""Forecasting: the next values of a time series from a window of its past.

Metrics: MAE, RMSE, MAPE, sMAPE, MASE of the model and of the seasonal-naive forecast, and their ratio
(`dlforge.eval.metrics.ForecastMetrics`). Report: the test forecast against the truth (PNG).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlforge.eval.metrics import ForecastMetrics
from dlforge.registry import register_task
from dlforge.tasks.base import RunReport, Task


@register_task("forecast")
class Forecast(Task):
    """The next values of a series."""

    name = "forecast"

    def metric_set(self, target_mean: float | list[float] = 0.0, target_std: float | list[float] = 1.0,
                   mase_scale: float | list[float] | None = None, loss_name: str = "mse") -> ForecastMetrics:
        return ForecastMetrics(target_mean, target_std, mase_scale, loss_name)

    def metrics(self, info: dict[str, Any], loss_name: str = "", split: str = "val") -> ForecastMetrics:
        return ForecastMetrics(info["target_offset"], info["target_scale"], info.get("mase_scale"), loss_name)

    def test_report(self, run: RunReport) -> dict[str, Any]:
        from dlforge.eval.forecast import forecast_report

        report = forecast_report(run.model, run.data, run.run_path / "plots" / "forecast.png", device=run.device)
        return {"forecast_plot": str(Path(report["png"]).relative_to(run.run_path))}
