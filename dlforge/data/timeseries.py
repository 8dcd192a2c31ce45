"""Time series forecasting data: co2, sunspots, seattle_temps and the user's own CSV (or Parquet) file.

    data: {name: co2, window: 104, horizon: 8}
    data: {name: timeseries_csv, path: sales.csv, time_column: date, target_columns: [units], season: 7}

Every source becomes a series on a regular time grid (`regularize`): gaps — missing values and missing time steps —
and off-grid time stamps are filled by linear interpolation in time, reported as errors, or left out (`fill`).
Then one `build_forecast` cuts it the same way for all: the last `test_size` steps are the test tail, the
`val_size` steps before it validation, the rest training. A sample's first target is at position t: its input is
x = series[t - window : t] and its targets y = series[t : t + horizon]; a sample belongs to the part its targets lie
in, and its input may reach back into an earlier part (that history is observed, so it is fair). Training samples
start every `stride` steps; validation and test samples at every step.

Each sample: `x` (window, F) float: every value column, scaled with training statistics, the target columns first;
`y` (horizon * T,) float: the T target columns' next steps, scaled, horizon-major (index h*T + j is step h of target
j; with one target simply (horizon,)); `naive` like `y`: the seasonal-naive forecast, the last value one season
before (y[t + h - season * ceil((h + 1) / season)]); `t` (long): the position of the first target in the series.
The seasonal naive and `info["mase_scale"]` (the mean absolute seasonal difference over the training part, in the
original units; Hyndman & Koehler 2006) are what `TaskMetrics("forecast")` scores a model against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from dlforge.config import DataConfig
from dlforge.data.dataset import DataBundle, TensorDictDataset, fingerprint_tensors
from dlforge.data.series_reader import Series, read_series, regularize, series_of_table, times_after, when
from dlforge.data.table_reader import read_table
from dlforge.errors import ConfigError, DataError
from dlforge.registry import register_dataset

BUNDLED = ("co2", "sunspots", "seattle_temps")
# Per data set: the seasonal period, the input window, the horizon, and the test and validation lengths (in steps).
DEFAULTS: dict[str, dict[str, int]] = {
    "co2": {"season": 52, "window": 104, "horizon": 8, "test_size": 104, "val_size": 104},  # weekly; the year
    "sunspots": {"season": 11, "window": 22, "horizon": 4, "test_size": 30, "val_size": 30},  # yearly; solar cycle
    "seattle_temps": {"season": 24, "window": 72, "horizon": 24, "test_size": 672, "val_size": 672},  # hourly; day
}


class TimeSeriesConfig(DataConfig):
    """A series to forecast: a bundled one, or a CSV / Parquet file given by `path`."""

    path: str | None = Field(None, description="the CSV or Parquet file (dataset timeseries_csv only)")
    time_column: str | None = Field(None, description="dates/times or numbers; default: the rows are the steps")
    value_columns: list[str] | None = Field(None, min_length=1, description="inputs; default: every numeric column")
    target_columns: list[str] | None = Field(None, min_length=1, description="to forecast; default: value_columns")
    freq: str | None = Field(None, description="time step: 1h, 15min, D, W-SAT, MS or a number; default: inferred")
    fill: Literal["interpolate", "error", "drop"] = Field(
        "interpolate", description="gaps and off-grid times: interpolate linearly in time, raise, or drop windows"
    )
    window: int | None = Field(None, ge=1, description="input steps per sample; default per dataset")
    horizon: int | None = Field(None, ge=1, description="steps forecast at once; default per dataset")
    season: int | None = Field(None, ge=1, description="seasonal period in steps (1: none); default per dataset")
    test_size: int | None = Field(None, ge=0, description="steps in the held-out tail; default per dataset")
    val_size: int | None = Field(None, ge=0, description="steps before the test tail for validation")
    stride: int = Field(1, ge=1, description="steps between training samples")
    scale: Literal["standard", "minmax", "none"] = Field("standard", description="fitted on the training part only")
    max_train: int | None = Field(None, ge=1, description="keep only the most recent training samples")

    @model_validator(mode="after")
    def _check(self) -> TimeSeriesConfig:
        if self.name == "timeseries_csv" and not self.path:
            raise ConfigError("data.path: required for dataset 'timeseries_csv'")
        if self.freq is not None and self.time_column is None and self.name not in BUNDLED:
            raise ConfigError("data.freq: needs data.time_column (without one, the rows are the steps)")
        if self.name in BUNDLED:
            for key in ("path", "time_column", "value_columns", "target_columns", "freq"):
                if getattr(self, key) is not None:
                    raise ConfigError(f"data.{key}: not used by the bundled dataset {self.name!r}; remove it")
        return self


# --- the registered data sets ----------------------------------------------------------------------------------


@register_dataset(TimeSeriesConfig)
def co2(config: TimeSeriesConfig) -> DataBundle:
    """Mauna Loa CO2 (statsmodels), weekly 1958-2001: 2284 steps, 59 missing; season 52."""
    frame = _statsmodels("co2").co2.load_pandas().data
    times = frame.index.to_numpy().astype("datetime64[ns]")
    series = Series("co2", times, frame["co2"].to_numpy(float)[:, None], ["co2"], ["co2"], "date")
    return build_forecast(series, config)


@register_dataset(TimeSeriesConfig)
def sunspots(config: TimeSeriesConfig) -> DataBundle:
    """Yearly sunspot numbers 1700-2008 (statsmodels): 309 steps; season 11 (the solar cycle)."""
    frame = _statsmodels("sunspots").sunspots.load_pandas().data
    values = frame["SUNACTIVITY"].to_numpy(float)[:, None]
    series = Series("sunspots", frame["YEAR"].to_numpy(float), values, ["SUNACTIVITY"], ["SUNACTIVITY"], "YEAR")
    return build_forecast(series, config)


@register_dataset(TimeSeriesConfig)
def seattle_temps(config: TimeSeriesConfig) -> DataBundle:
    """Hourly Seattle temperatures of 2010 (vega_datasets): 8759 readings; season 24."""
    try:
        from vega_datasets import local_data
    except ImportError:
        raise DataError("dataset 'seattle_temps' needs vega_datasets; pip install 'dlforge[datasets]'") from None
    frame = local_data.seattle_temps()
    times = frame["date"].to_numpy().astype("datetime64[ns]")
    series = Series("seattle_temps", times, frame["temp"].to_numpy(float)[:, None], ["temp"], ["temp"], "date")
    return build_forecast(series, config)


@register_dataset(TimeSeriesConfig)
def timeseries_csv(config: TimeSeriesConfig) -> DataBundle:
    """A series in a CSV (or Parquet) file: data.path, data.time_column, data.target_columns."""
    return build_forecast(read_series(config.path, config), config)


def _statsmodels(name: str):
    try:
        from statsmodels import datasets
    except ImportError:
        raise DataError(f"dataset {name!r} needs statsmodels; pip install 'dlforge[datasets]'") from None
    return datasets


# --- windows -----------------------------------------------------------------------------------------------------


def build_forecast(series: Series, config: TimeSeriesConfig) -> DataBundle:
    """Regularize, split in time order, scale with training statistics and cut windows; see the module docstring."""
    grid = regularize(series, config.freq, config.fill)
    values = grid.values  # (N, F), targets first
    n, num_targets = len(values), len(series.targets)
    p = _sizes(series.source, config, n)
    season, window, horizon, test, val = p["season"], p["window"], p["horizon"], p["test_size"], p["val_size"]
    n_train = n - test - val
    first = max(window, season)  # room for the input window and for one season back
    if n_train - horizon < first:
        raise DataError(f"{series.source}: {n} steps leave {n_train} for training, too few for a window of {window} "
                        f"(and a season of {season}) plus a horizon of {horizon}; lower data.window, "
                        f"data.test_size or data.val_size")

    offset, scale = _fit_scaler(values[:n_train], config.scale)
    scaled = ((values - offset) / scale).astype(np.float32)
    mase_scale = _mase_scale(series, values[:n_train, :num_targets], season)

    splits = {
        "train": np.arange(first, n_train - horizon + 1, config.stride),
        "val": np.arange(max(n_train, first), n_train + val - horizon + 1),
        "test": np.arange(max(n - test, first), n - horizon + 1),
    }
    data = {name: _windows(scaled, origins, window, horizon, season, num_targets) for name, origins in splits.items()}
    if config.max_train is not None:
        data["train"] = {k: v[-config.max_train:] for k, v in data["train"].items()}
    if len(data["train"]["t"]) == 0:
        raise DataError(f"{series.source}: no training window without gaps; use data.fill: interpolate")

    t_off, t_scale = offset[:num_targets].tolist(), scale[:num_targets].tolist()
    info: dict[str, Any] = {
        "task": "forecast", "num_classes": None, "label_names": None, "series_name": series.source,
        "season": season, "window": window, "horizon": horizon, "num_targets": num_targets,
        "target_columns": series.targets, "value_columns": series.columns, "freq": grid.freq,
        "scale": config.scale, "target_offset": t_off, "target_scale": t_scale, "mase_scale": mase_scale,
        "filled": grid.filled, "dropped": grid.dropped, "steps": n, "test_start": n - test,
        "n_train": len(data["train"]["t"]), "n_val": len(data["val"]["t"]), "n_test": len(data["test"]["t"]),
        "test_times": _time_texts(grid.times, n - test, n),
    }  # fmt: skip
    if config.scale == "standard":
        info["target_mean"], info["target_std"] = t_off, t_scale
    elif config.scale == "minmax":
        info["target_min"], info["target_max"] = t_off, (offset + scale)[:num_targets].tolist()
    preprocessing = {
        "kind": "timeseries", "series_name": series.source, "time_column": series.time_column,
        "value_columns": series.columns, "target_columns": series.targets, "freq": grid.freq, "fill": config.fill,
        "season": season, "window": window, "horizon": horizon, "scale": config.scale,
        "offset": offset.tolist(), "scale_factor": scale.tolist(),
    }  # fmt: skip

    def dataset(name: str) -> TensorDictDataset | None:
        tensors = {k: torch.from_numpy(v) for k, v in data[name].items()}
        return TensorDictDataset(tensors) if len(tensors["t"]) else None

    sizes = torch.tensor([season, window, horizon, test, val, config.stride, config.max_train or 0])
    return DataBundle(
        dataset("train"), dataset("val"), dataset("test"), info=info,
        model_defaults={"in_features": values.shape[1], "horizon": horizon, "num_targets": num_targets,
                        "out_features": horizon * num_targets},
        preprocessing=preprocessing,
        fingerprint=fingerprint_tensors(torch.from_numpy(scaled), sizes),
    )  # fmt: skip


def _sizes(source: str, config: TimeSeriesConfig, n: int) -> dict[str, int]:
    """season, window, horizon, test_size, val_size: the config's, else the data set's defaults."""
    given = {k: getattr(config, k) for k in ("season", "window", "horizon", "test_size", "val_size")}
    base = dict(DEFAULTS.get(config.name, {}))
    if not base:  # a user's series: no season, short windows, a tenth each for validation and test
        season = given["season"] or 1
        horizon = given["horizon"] or 1
        share = max(horizon, n // 10)
        base = {"season": season, "window": 2 * season if season > 1 else 16, "horizon": horizon,
                "test_size": share, "val_size": share}
    sizes = {k: v if v is not None else base[k] for k, v in given.items()}
    for part in ("test_size", "val_size"):
        if 0 < sizes[part] < sizes["horizon"]:
            raise ConfigError(f"data.{part}: {sizes[part]} steps cannot hold one horizon of {sizes['horizon']}; "
                              f"expected 0 or at least {sizes['horizon']}")
    return sizes


def _fit_scaler(train: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(offset, scale) per column so that scaled = (value - offset) / scale; NaN-aware; a constant column keeps 1."""
    f = train.shape[1]
    if kind == "none":
        return np.zeros(f), np.ones(f)
    if kind == "standard":  # population std, as sklearn's StandardScaler
        offset, scale = np.nanmean(train, axis=0), np.nanstd(train, axis=0)
    else:
        offset, scale = np.nanmin(train, axis=0), np.nanmax(train, axis=0) - np.nanmin(train, axis=0)
    return offset, np.where(scale > 0, scale, 1.0)


def _mase_scale(series: Series, train: np.ndarray, season: int) -> list[float]:
    """Per target: mean |y_i - y_(i - season)| over the training part, original units (Hyndman & Koehler 2006)."""
    diffs = np.abs(train[season:] - train[:-season])
    if not np.isfinite(diffs).any(axis=0).all():
        raise DataError(f"{series.source}: the training part is too short for a season of {season}")
    return np.nanmean(diffs, axis=0).tolist()


def _windows(scaled: np.ndarray, origins: np.ndarray, window: int, horizon: int, season: int,
             num_targets: int) -> dict[str, np.ndarray]:
    """x (S, window, F), y and naive (S, horizon * T), t (S,) for each origin t; windows with a NaN are left out."""
    h = np.arange(horizon)
    back = season * np.ceil((h + 1) / season).astype(np.int64)  # the last same-season step before the origin
    x = scaled[origins[:, None] + np.arange(-window, 0)]  # (S, window, F)
    y = scaled[origins[:, None] + h, :num_targets]  # (S, H, T)
    naive = scaled[origins[:, None] + h - back, :num_targets]  # (S, H, T)
    keep = np.isfinite(x).all(axis=(1, 2)) & np.isfinite(y).all(axis=(1, 2)) & np.isfinite(naive).all(axis=(1, 2))
    s = int(keep.sum())
    width = horizon * num_targets
    return {"x": np.ascontiguousarray(x[keep]), "y": y[keep].reshape(s, width),
            "naive": naive[keep].reshape(s, width), "t": origins[keep].astype(np.int64)}


def _time_texts(times: np.ndarray | None, start: int, end: int) -> list[str] | list[float] | list[int]:
    if times is None:
        return list(range(start, end))
    if times.dtype.kind == "M":
        return [str(t) for t in np.datetime_as_string(times[start:end], unit="s")]
    return times[start:end].tolist()


# --- new inputs --------------------------------------------------------------------------------------------------


def scale_values(preprocessing: dict[str, Any], values: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Raw values (..., F) in `value_columns` order (targets first) -> the model's scaled inputs."""
    values = torch.as_tensor(values, dtype=torch.float32)
    offset = torch.tensor(preprocessing["offset"], dtype=torch.float32)
    return (values - offset) / torch.tensor(preprocessing["scale_factor"], dtype=torch.float32)


def unscale_forecast(preprocessing: dict[str, Any], logits: torch.Tensor) -> torch.Tensor:
    """Forecasts (B, H * T) -> (B, H, T) in the targets' original units."""
    t = len(preprocessing["target_columns"])
    offset = torch.tensor(preprocessing["offset"][:t], dtype=torch.float32)
    scale = torch.tensor(preprocessing["scale_factor"][:t], dtype=torch.float32)
    return logits.detach().float().reshape(len(logits), -1, t) * scale + offset


def prepare_recent(preprocessing: dict[str, Any], path: str | Path) -> tuple[torch.Tensor, list[str] | None]:
    """A forecast's input from a CSV/Parquet file of the series' latest values: x (1, window, F), the file's last
    `window` steps scaled as in training, and the times of the `horizon` steps that follow (None without a time
    column). The value columns are those of training; with the time column the rows go on the training grid, gaps
    handled as `fill` says; without it the rows are consecutive steps."""
    table = read_table(path)
    time_column = preprocessing.get("time_column")
    if time_column not in table.columns:
        time_column = None
    series = series_of_table(table, time_column, preprocessing["value_columns"], preprocessing["target_columns"])
    grid = regularize(series, preprocessing["freq"] if time_column else None, preprocessing["fill"])
    window = preprocessing["window"]
    if len(grid.values) < window:
        raise DataError(f"{table.source}: the model reads the last {window} steps of {', '.join(series.columns)} to "
                        f"forecast, the file has {len(grid.values)}; give at least {window} rows")
    recent = grid.values[-window:]  # (window, F)
    gaps = np.flatnonzero(~np.isfinite(recent).all(axis=1))
    if len(gaps):
        raise DataError(f"{table.source}: no value at {when(grid, len(grid.values) - window + int(gaps[0]))}, one of "
                        f"the last {window} steps the model reads; fill the gap")
    return scale_values(preprocessing, recent)[None], times_after(grid, preprocessing["horizon"])
