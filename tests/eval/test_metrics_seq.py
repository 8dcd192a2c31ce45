"""Forecast and language-modeling metrics against numpy / sklearn, TaskMetrics.from_info, and the forecast report."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from dlforge.data.dataset import DataBundle, TensorDictDataset
from dlforge.eval import TaskMetrics, lower_is_better
from dlforge.eval.forecast import forecast_report, seasonal_naive_metrics
from dlforge.models import rnn  # noqa: F401  (registers the forecasters)
from dlforge.models.output import Output
from dlforge.registry import create_model

MEAN, STD, MASE_SCALE = [300.0, -2.0], [10.0, 0.5], [1.5, 0.25]


def forecast_data(n: int = 90, horizon: int = 3, seed: int = 0):
    """Scaled (n, H * 2) targets, forecasts and naive forecasts, horizon-major, with some exact zeros in column 1."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(n, horizon * 2, generator=g)
    y[::7, 1] = (0 - MEAN[1]) / STD[1]  # the second target is exactly 0 in original units here
    pred = y + 0.3 * torch.randn(n, horizon * 2, generator=g)
    naive = y + 0.6 * torch.randn(n, horizon * 2, generator=g)
    return pred, y, naive


def unscaled(values: torch.Tensor) -> np.ndarray:
    return values.double().numpy().reshape(len(values), -1, 2) * np.array(STD) + np.array(MEAN)  # (n, H, 2)


def feed(metrics: TaskMetrics, pred, y, naive, batch_size: int) -> TaskMetrics:
    for s in range(0, len(y), batch_size):
        batch = {"y": y[s:s + batch_size]}
        if naive is not None:
            batch["naive"] = naive[s:s + batch_size]
        metrics.update(Output(logits=pred[s:s + batch_size]), batch)
    return metrics


def by_hand(forecast: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    err = np.abs(forecast - actual)
    nonzero = actual != 0
    return {
        "mae": skm.mean_absolute_error(actual.reshape(-1), forecast.reshape(-1)),
        "rmse": math.sqrt(skm.mean_squared_error(actual.reshape(-1), forecast.reshape(-1))),
        "mape": 100 * np.mean(err[nonzero] / np.abs(actual[nonzero])),  # zeros skipped
        "smape": 100 * np.mean(2 * err / (np.abs(actual) + np.abs(forecast))),
        "mase": np.mean([err[:, :, j].mean() / MASE_SCALE[j] for j in range(2)]),
    }


@pytest.mark.parametrize("batch_size", [90, 16, 5])
def test_forecast_metrics_match_numpy_in_original_units(batch_size):
    pred, y, naive = forecast_data()
    metrics = feed(TaskMetrics("forecast", target_mean=MEAN, target_std=STD, mase_scale=MASE_SCALE), pred, y, naive,
                   batch_size)
    result = metrics.compute()
    actual = unscaled(y)
    assert (actual == 0).sum() == 13  # the zeros that MAPE must skip
    model, baseline = by_hand(unscaled(pred), actual), by_hand(unscaled(naive), actual)
    expected = {**model, **{f"naive_{k}": v for k, v in baseline.items()}, "rel_mae": model["mae"] / baseline["mae"]}
    assert result == pytest.approx(expected, rel=1e-9)
    assert 0 < result["rel_mae"] < 1  # the noisier naive is worse
    # sklearn's MAPE (a fraction) agrees on the nonzero targets
    nonzero = actual.reshape(-1) != 0
    assert result["mape"] == pytest.approx(100 * skm.mean_absolute_percentage_error(
        actual.reshape(-1)[nonzero], unscaled(pred).reshape(-1)[nonzero]), rel=1e-9)


def test_forecast_metrics_single_target_scalars_and_without_naive_or_mase():
    g = torch.Generator().manual_seed(1)
    y, pred = torch.randn(40, 4, generator=g), torch.randn(40, 4, generator=g)
    result = feed(TaskMetrics("forecast", target_mean=5.0, target_std=2.0), pred, y, None, 8).compute()
    assert set(result) == {"mae", "rmse", "mape", "smape"}  # no mase_scale, no naive: nothing made up
    assert result["mae"] == pytest.approx(2.0 * (pred - y).abs().double().mean().item(), rel=1e-6)
    perfect = feed(TaskMetrics("forecast", mase_scale=1.0), y, y, y + 1, 8).compute()
    assert perfect["mae"] == 0 and perfect["mase"] == 0 and perfect["rel_mae"] == 0
    assert perfect["naive_mae"] == pytest.approx(1.0, rel=1e-6)


def test_language_modeling_metrics_match_a_numpy_log_softmax():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(6, 9, 7, generator=g)
    labels = torch.randint(0, 7, (6, 9), generator=g)
    labels[:, :3] = -100
    labels[0, 5] = -100
    metrics = TaskMetrics("language_modeling")
    for rows in (slice(0, 2), slice(2, 3), slice(3, 6)):  # uneven batches: every token weighs the same
        metrics.update(Output(logits=logits[rows]), {"labels": labels[rows]})
    result = metrics.compute()
    lg, lb = logits.double().numpy().reshape(-1, 7), labels.numpy().reshape(-1)
    keep = lb != -100
    log_probs = lg - np.log(np.exp(lg).sum(1, keepdims=True))
    nll = -log_probs[keep, lb[keep]].mean()
    assert keep.sum() == 6 * 6 - 1
    assert result["accuracy"] == pytest.approx(np.mean(lg[keep].argmax(1) == lb[keep]), abs=1e-12)
    assert result["perplexity"] == pytest.approx(np.exp(nll), rel=1e-6)
    assert result["bits_per_char"] == pytest.approx(nll / np.log(2), rel=1e-6)
    assert skm.log_loss(lb[keep], np.exp(log_probs[keep]), labels=range(7)) == pytest.approx(nll, rel=1e-9)


def test_from_info_builds_each_tasks_metrics():
    classification = TaskMetrics.from_info({"task": "classification", "num_classes": 3})
    assert classification.task == "classification" and classification.num_classes == 3
    regression = TaskMetrics.from_info({"task": "regression", "target_mean": 4.0, "target_std": 2.0}, "mse")
    assert (regression.target_mean, regression.target_std) == (4.0, 2.0)
    info = {"task": "forecast", "target_offset": MEAN, "target_scale": STD, "mase_scale": MASE_SCALE}
    pred, y, naive = forecast_data(n=20)
    direct = feed(TaskMetrics("forecast", target_mean=MEAN, target_std=STD, mase_scale=MASE_SCALE), pred, y, naive, 20)
    assert feed(TaskMetrics.from_info(info, "mse"), pred, y, naive, 20).compute() == direct.compute()
    assert TaskMetrics.from_info({"task": "language_modeling", "vocab_size": 80}).task == "language_modeling"
    with pytest.raises(ValueError, match="unknown task"):
        TaskMetrics.from_info({"task": "tagging"})


def test_reset_forgets_forecast_state():
    pred, y, naive = forecast_data(n=30)
    metrics = feed(TaskMetrics("forecast", target_mean=MEAN, target_std=STD), pred * 3, y, naive, 10)
    metrics.reset()
    assert metrics.compute() == {}
    fresh = feed(TaskMetrics("forecast", target_mean=MEAN, target_std=STD), pred, y, naive, 10).compute()
    assert feed(metrics, pred, y, naive, 10).compute() == pytest.approx(fresh)


@pytest.mark.parametrize(
    ("name", "lower"),
    [("mase", True), ("val/mase", True), ("smape", True), ("rel_mae", True), ("naive_mae", True),
     ("test/bits_per_char", True), ("perplexity", True), ("val/accuracy", False)],
)
def test_lower_is_better_knows_the_new_metrics(name, lower):
    assert lower_is_better(name) is lower


# --- the forecast report -----------------------------------------------------------------------------------------


class Oracle(torch.nn.Module):
    """A 'forecaster' that returns the true targets: every error is 0."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(()))

    def forward(self, batch):
        return Output(logits=batch["y"] + 0 * self.p)


def tiny_forecast_bundle(horizon: int = 3) -> DataBundle:
    steps = np.arange(120, dtype=np.float64)
    series = 50 + 0.1 * steps + 3 * np.sin(2 * np.pi * steps / 12)  # trend + season 12
    mean, std = series[:80].mean(), series[:80].std()
    scaled = torch.tensor((series - mean) / std, dtype=torch.float32)
    t = torch.arange(100, 120 - horizon + 1)  # the test tail: steps 100..119
    h = torch.arange(horizon)
    tensors = {"x": scaled[t[:, None] + torch.arange(-24, 0)].unsqueeze(-1), "y": scaled[t[:, None] + h],
               "naive": scaled[t[:, None] + h - 12], "t": t}
    info = {"task": "forecast", "series_name": "toy", "horizon": horizon, "num_targets": 1, "target_columns": ["v"],
            "target_offset": [mean], "target_scale": [std], "test_start": 100, "season": 12,
            "mase_scale": [float(np.mean(np.abs(series[12:80] - series[:68])))]}
    return DataBundle(TensorDictDataset(tensors), None, TensorDictDataset(tensors), info=info)


def test_forecast_report_writes_a_png_and_a_perfect_model_scores_zero(tmp_path):
    bundle = tiny_forecast_bundle()
    report = forecast_report(Oracle(), bundle, tmp_path / "plots" / "forecast.png")
    png = tmp_path / "plots" / "forecast.png"
    assert report["png"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert report["mae"] == 0 and report["rmse"] == 0 and report["mase"] == 0 and report["rel_mae"] == 0
    # the naive's errors: the trend's rise over one season, 0.1 * 12, at every target
    assert report["naive_mae"] == pytest.approx(1.2, rel=1e-5) and report["naive_mase"] == pytest.approx(1.0, rel=1e-5)
    assert seasonal_naive_metrics(bundle)["mae"] == pytest.approx(report["naive_mae"], rel=1e-9)


def test_forecast_report_on_a_real_model_matches_its_metrics(tmp_path):
    bundle = tiny_forecast_bundle(horizon=2)
    torch.manual_seed(0)
    model = create_model("gru_forecaster", in_features=1, dim=6, n_layers=1, horizon=2)
    report = forecast_report(model, bundle, tmp_path / "f.png")
    assert model.training  # evaluated in eval mode, then put back as it was
    model.eval()
    with torch.no_grad():
        pred = model(bundle.test.tensors).logits.double() * bundle.info["target_scale"][0]
    truth = bundle.test.tensors["y"].double() * bundle.info["target_scale"][0]
    assert report["mae"] == pytest.approx((pred - truth).abs().mean().item(), rel=1e-6)
    assert (tmp_path / "f.png").is_file()
