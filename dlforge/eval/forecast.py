"""A forecaster on the held-out tail: errors against the seasonal naive, and a picture of the forecasts.

    report = forecast_report(model, bundle, Path("runs/co2/plots/forecast.png"))
    report["mase"], report["rel_mae"]  # rel_mae < 1: better than the seasonal naive on the same targets

The PNG shows, over the test tail (steps counted from its start), the actual series, the one-step-ahead forecast of
every origin, the seasonal naive one step ahead, the full H-step forecast from the first test origin, and the input
window before the tail for context; the first target column when there are several.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from dlforge.data.dataset import DataBundle, collate_batch
from dlforge.errors import DataError
from dlforge.eval.metrics import TaskMetrics
from dlforge.models.output import Output


@torch.no_grad()
def forecast_report(model: torch.nn.Module, data: DataBundle, out_png: Path, device: str | torch.device = "cpu",
                    batch_size: int = 256) -> dict[str, Any]:
    """Metrics of `model` on `data.test` (see `TaskMetrics("forecast")`) plus the path of the PNG written."""
    if data.info.get("task") != "forecast" or data.test is None:
        raise DataError("forecast_report: needs forecast data with a test split (data.test_size > 0)")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    metrics = TaskMetrics.from_info(data.info, getattr(getattr(model, "config", None), "loss", "mse")).to(device)
    parts: dict[str, list[torch.Tensor]] = {"pred": [], "y": [], "naive": [], "t": []}
    for batch in DataLoader(data.test, batch_size=batch_size, shuffle=False, collate_fn=collate_batch):
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(batch)
        metrics.update(out, batch)
        for key, value in (("pred", out.logits), ("y", batch["y"]), ("naive", batch["naive"]), ("t", batch["t"])):
            parts[key].append(value.detach().cpu())
    model.train(was_training)
    result: dict[str, Any] = metrics.compute()

    series = {k: torch.cat(v) for k, v in parts.items()}
    history = data.test[0]["x"][:, 0]  # (window,) the first target's inputs before the first test origin
    _plot(series, history, data.info, Path(out_png))
    result["png"] = str(out_png)
    return result


def seasonal_naive_metrics(data: DataBundle, split: str = "test") -> dict[str, float]:
    """The seasonal naive's own errors on a split: a 'model' that forecasts `naive` (mae, rmse, mape, mase...)."""
    dataset = getattr(data, split)
    metrics = TaskMetrics.from_info(data.info, "mse")
    for batch in DataLoader(dataset, batch_size=1024, shuffle=False, collate_fn=collate_batch):
        metrics.update(Output(logits=batch["naive"]), batch)
    return {k: v for k, v in metrics.compute().items() if not k.startswith("naive_") and k != "rel_mae"}


def _unscale(values: torch.Tensor, info: dict[str, Any]) -> np.ndarray:
    """(S, H * T) scaled -> (S, H, T) original units."""
    t = info["num_targets"]
    offset, scale = np.asarray(info["target_offset"]), np.asarray(info["target_scale"])
    return values.double().numpy().reshape(len(values), -1, t) * scale + offset


def _plot(series: dict[str, torch.Tensor], history: torch.Tensor, info: dict[str, Any], out_png: Path) -> None:
    from matplotlib.figure import Figure

    pred, actual, naive = (_unscale(series[k], info)[:, :, 0] for k in ("pred", "y", "naive"))  # (S, H)
    origin = series["t"].numpy() - info["test_start"]  # (S,) steps from the start of the test tail
    horizon = pred.shape[1]
    past = history.double().numpy() * info["target_scale"][0] + info["target_offset"][0]
    # the actual series over the tail: each origin's first target, then the last origin's remaining steps
    actual_steps = np.concatenate([origin, origin[-1] + np.arange(1, horizon)])
    actual_values = np.concatenate([actual[:, 0], actual[-1, 1:]])

    fig = Figure(figsize=(11, 4.5))
    ax = fig.add_subplot()
    ax.plot(np.arange(-len(past), 0) + origin[0], past, color="0.55", lw=1, label="history (input window)")
    ax.plot(actual_steps, actual_values, color="black", lw=1.4, label="actual")
    ax.plot(origin, pred[:, 0], color="tab:blue", lw=1.2, label="forecast, 1 step ahead")
    ax.plot(origin, naive[:, 0], color="tab:orange", lw=1, ls="--", label="seasonal naive, 1 step ahead")
    ax.plot(origin[0] + np.arange(horizon), pred[0], color="tab:red", lw=1.6, marker="o", ms=3,
            label=f"forecast, {horizon} steps from the first origin")
    ax.axvline(0, color="0.3", lw=0.8, ls=":")
    start = info.get("test_times") or []
    when = f" (test tail from {str(start[0]).removesuffix('T00:00:00')})" if start else ""
    column = info.get("target_columns", ["target"])[0]
    ax.set_title(f"{info.get('series_name', 'series')}: {column}{when}")
    ax.set_xlabel("steps from the start of the test tail")
    ax.set_ylabel(column)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
