"""Forecasting: the next values of a time series from a window of its past.

Metrics: MAE, RMSE, MAPE, sMAPE, MASE of the model and of the seasonal-naive forecast, and their ratio
(`dlforge.eval.metrics.ForecastMetrics`). Report: the test forecast against the truth (PNG). Predict: a CSV/Parquet
file of the series' latest values to the next `horizon` steps after its last row, one row per step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dlforge.eval.metrics import ForecastMetrics
from dlforge.registry import register_task
from dlforge.tasks.base import RunReport, Task
from dlforge.tasks.inputs import forward_in_batches


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

    def predict(self, model: torch.nn.Module, input_path: Path) -> list[dict[str, Any]]:
        """The forecast of the steps after the last row of a file of the series' latest values: a row per step,
        with its time when the file has the time column, and the value of each target column."""
        from dlforge.data.timeseries import prepare_recent, unscale_forecast

        pre = model.meta["extra"]["preprocessing.json"]
        x, times = prepare_recent(pre, input_path)
        forecast = unscale_forecast(pre, forward_in_batches(model, {"x": x}))[0]  # (horizon, targets)
        rows = []
        for h, values in enumerate(forecast.tolist()):
            when = {"time": times[h]} if times is not None else {}
            rows.append({"step": h + 1, **when, **dict(zip(pre["target_columns"], values, strict=True))})
        return rows

    def predict_input(self, preprocessing: dict[str, Any]) -> tuple[str, str] | None:
        pre = preprocessing
        columns = ", ".join(pre["value_columns"])
        if pre.get("time_column"):
            columns = f"{pre['time_column']} (optional: without it the rows are consecutive steps), {columns}"
            step = f"a row per step ({pre['freq']})"
        else:
            step = "a row per step"
        return ("recent.csv", f"a CSV or Parquet file of the series' latest values, {step}: columns {columns}; at "
                              f"least the last {pre['window']} steps; gives the {pre['horizon']} steps after its last "
                              "row")
