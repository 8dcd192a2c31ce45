"""Sequence classification data: from the last `window` days, tell tomorrow's weather (seattle_weather).

    data: {name: seattle_weather, window: 14}

Seattle's daily weather 2012-2015 (vega_datasets, 1461 days): precipitation, temp_max, temp_min, wind and the day's
`weather` (drizzle, fog, rain, snow, sun). A sample whose target is day t reads days t - window .. t - 1, each as 11
features: the four measurements (scaled with training statistics), the day's weather one-hot (5, in label order),
and the day of the year as sin and cos; its label `y` is day t's weather id. Splits are in time order: the last
`test_size` days are test, the `val_size` days before them validation, the rest training; a sample belongs to the
split of its target day (its window may reach back into the previous split: those days are observed history).

Label ids are the sorted weather names. `info["baselines"]` holds the test accuracy of always answering the most
common training class, and of "tomorrow like today" (persistence), to judge a model against.

New inputs (`prepare_days`, what `dlforge predict` reads): a CSV or Parquet file of consecutive days with the columns
of the source (date, the measurements and the day's weather), one prediction per `window` days: the weather of the
day after them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from dlforge.config import DataConfig
from dlforge.data.class_weights import balanced_class_weights
from dlforge.data.dataset import DataBundle, TensorDictDataset, fingerprint_tensors
from dlforge.data.series_reader import time_values
from dlforge.data.table_reader import Table, numeric_values, read_table, text_values
from dlforge.errors import DataError
from dlforge.registry import register_dataset

MEASUREMENTS = ("precipitation", "temp_max", "temp_min", "wind")
DAYS_PER_YEAR = 365.25
LABEL_COLUMN, DATE_COLUMN = "weather", "date"  # seattle_weather's; runs from before they were recorded used these


class SequenceConfig(DataConfig):
    """Windows of days and the next day's class, split in time order."""

    window: int = Field(14, ge=1, description="days of history per sample")
    test_size: int = Field(365, ge=0, description="days in the held-out tail")
    val_size: int = Field(180, ge=0, description="days before the test tail for validation")
    stride: int = Field(1, ge=1, description="days between training samples")
    scale: Literal["standard", "minmax", "none"] = Field("standard", description="fitted on the training days only")
    class_weights: Literal["none", "balanced"] = Field("none", description="balanced: n / (classes * count), train")
    max_train: int | None = Field(None, ge=1, description="keep only the most recent training samples")


@register_dataset(SequenceConfig)
def seattle_weather(config: SequenceConfig) -> DataBundle:
    """Seattle daily weather 2012-2015 (vega_datasets): tomorrow's weather from the last `window` days; 5 classes."""
    try:
        from vega_datasets import local_data
    except ImportError:
        raise DataError("dataset 'seattle_weather' needs vega_datasets; pip install 'dlforge[datasets]'") from None
    frame = local_data.seattle_weather()
    measurements = frame[list(MEASUREMENTS)].to_numpy(np.float64)  # (N, 4)
    labels = frame[LABEL_COLUMN].astype(str).to_numpy()
    day_of_year = frame[DATE_COLUMN].dt.day_of_year.to_numpy(np.float64)
    return build_sequences("seattle_weather", measurements, list(MEASUREMENTS), labels, day_of_year, config)


def build_sequences(source: str, measurements: np.ndarray, names: list[str], labels: np.ndarray,
                    day_of_year: np.ndarray, config: SequenceConfig, label_column: str = LABEL_COLUMN,
                    date_column: str = DATE_COLUMN) -> DataBundle:
    """Daily measurements (N, M), class labels (N,) and day of year (N,) -> next-day classification windows; the
    columns `label_column` and `date_column` are what new inputs (`prepare_days`) name them."""
    n = len(labels)
    if not np.isfinite(measurements).all():
        row, col = np.argwhere(~np.isfinite(measurements))[0]
        raise DataError(f"{source}: row {row + 1}: column {names[col]!r}: missing value")
    label_names, ids = np.unique(labels, return_inverse=True)
    label_names = [str(s) for s in label_names]
    window = config.window
    n_train = n - config.test_size - config.val_size
    if n_train - window < 1:
        raise DataError(f"{source}: {n} days leave {n_train} for training, too few for a window of {window}; "
                        f"lower data.window, data.test_size or data.val_size")

    offset, scale = _fit_scaler(measurements[:n_train], config.scale)
    features = day_features(measurements, offset, scale, ids, len(label_names), day_of_year)
    feature_names = [*names, *(f"weather={c}" for c in label_names), "day_of_year_sin", "day_of_year_cos"]

    targets = {
        "train": np.arange(window, n_train, config.stride),
        "val": np.arange(max(n_train, window), n - config.test_size),
        "test": np.arange(max(n - config.test_size, window), n),
    }
    if config.max_train is not None:
        targets["train"] = targets["train"][-config.max_train:]

    def dataset(days: np.ndarray) -> TensorDictDataset | None:
        if len(days) == 0:
            return None
        x = torch.from_numpy(features[days[:, None] + np.arange(-window, 0)])  # (S, window, F)
        return TensorDictDataset({"x": x, "y": torch.from_numpy(ids[days].astype(np.int64))})

    num_classes = len(label_names)
    train_ids = ids[targets["train"]]
    weights = balanced_class_weights(train_ids, label_names, source) if config.class_weights == "balanced" else None
    info: dict[str, Any] = {
        "task": "classification", "num_classes": num_classes, "label_names": label_names,
        "feature_names": feature_names, "target": "weather (next day)", "source": source, "window": window,
        "n_train": len(targets["train"]), "n_val": len(targets["val"]), "n_test": len(targets["test"]),
        "class_counts": {s: np.bincount(ids[d], minlength=num_classes).tolist() for s, d in targets.items()},
        "baselines": _baselines(ids, targets["test"], train_ids),
    }  # fmt: skip
    preprocessing = {
        "kind": "sequence", "window": window, "measurements": names, "offset": offset.tolist(),
        "scale_factor": scale.tolist(), "label_names": label_names, "feature_names": feature_names,
        "task": "classification", "label_column": label_column, "date_column": date_column,
    }  # fmt: skip
    return DataBundle(
        dataset(targets["train"]), dataset(targets["val"]), dataset(targets["test"]), info=info,
        model_defaults={"in_features": features.shape[1], "num_classes": num_classes, "out_features": num_classes,
                        "class_weights": weights},
        preprocessing=preprocessing,
        fingerprint=fingerprint_tensors(torch.from_numpy(features), torch.tensor([window, config.test_size,
                                                                                  config.val_size, config.stride])),
    )  # fmt: skip


def day_features(measurements: np.ndarray, offset: np.ndarray, scale: np.ndarray, ids: np.ndarray, num_classes: int,
                 day_of_year: np.ndarray) -> np.ndarray:
    """Each day's features (N, M + C + 2) float32: its measurements scaled, its weather one-hot, the day of the year
    as sin and cos."""
    angle = 2 * np.pi * day_of_year / DAYS_PER_YEAR
    return np.concatenate([
        (measurements - offset) / scale,  # (N, M)
        np.eye(num_classes)[ids],  # (N, C) the day's weather
        np.sin(angle)[:, None], np.cos(angle)[:, None],  # (N, 2)
    ], axis=1).astype(np.float32)  # fmt: skip


def _fit_scaler(train: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(offset, scale) per column: scaled = (value - offset) / scale; a constant column keeps scale 1."""
    if kind == "none":
        return np.zeros(train.shape[1]), np.ones(train.shape[1])
    if kind == "standard":  # population std, as sklearn's StandardScaler
        offset, scale = train.mean(axis=0), train.std(axis=0)
    else:
        offset, scale = train.min(axis=0), train.max(axis=0) - train.min(axis=0)
    return offset, np.where(scale > 0, scale, 1.0)


def _baselines(ids: np.ndarray, test_days: np.ndarray, train_ids: np.ndarray) -> dict[str, float]:
    """Test accuracy of the most common training class, and of persistence (tomorrow's weather = today's)."""
    if len(test_days) == 0:
        return {}
    majority = int(np.bincount(train_ids).argmax())
    return {"majority_accuracy": float((ids[test_days] == majority).mean()),
            "persistence_accuracy": float((ids[test_days] == ids[test_days - 1]).mean())}


# --- new inputs --------------------------------------------------------------------------------------------------


def prepare_days(preprocessing: dict[str, Any], path: str | Path) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Windows of consecutive days from a CSV or Parquet file (date, measurements and the day's weather, as in
    training), prepared as the training windows were: x (S, window, F), one window ending at each day from the
    `window`-th on; and for each, the file line of its last day and the date it predicts (the next day)."""
    import pandas as pd

    table = read_table(path)
    label_column = preprocessing.get("label_column", LABEL_COLUMN)
    date_column = preprocessing.get("date_column", DATE_COLUMN)
    names, label_names = preprocessing["measurements"], preprocessing["label_names"]
    for name, role in [(date_column, "date"), *((n, "measurement") for n in names), (label_column, "label")]:
        table.require(name, role)
    measurements = np.stack([numeric_values(table, n) for n in names], axis=1)  # (N, M)
    ids = np.array([_label_id(table, label_column, i, label, label_names)
                    for i, label in enumerate(text_values(table, label_column))], dtype=np.int64)
    days = _consecutive_days(table, date_column)
    window = preprocessing["window"]
    if len(days) < window:
        raise DataError(f"{table.source}: {len(days)} days; the model reads {window} consecutive days to predict the "
                        f"next one; give at least {window} rows")
    day_of_year = pd.DatetimeIndex(days).day_of_year.to_numpy(np.float64)
    features = day_features(measurements, np.asarray(preprocessing["offset"]),
                            np.asarray(preprocessing["scale_factor"]), ids, len(label_names), day_of_year)
    ends = np.arange(window, len(days) + 1)  # a window is days [end - window, end)
    x = torch.from_numpy(features[ends[:, None] + np.arange(-window, 0)])  # (S, window, F)
    next_days = np.datetime_as_string(days[ends - 1] + np.timedelta64(1, "D"), unit="D")
    return x, [{"line": table.lines[e - 1], "date": str(d)} for e, d in zip(ends, next_days, strict=True)]


def _label_id(table: Table, column: str, i: int, label: str, label_names: list[str]) -> int:
    if label not in label_names:
        raise DataError(f"{table.where(i)}: column {column!r}: {label!r} was not seen in training; expected one of "
                        f"{', '.join(label_names)}")
    return label_names.index(label)


def _consecutive_days(table: Table, column: str) -> np.ndarray:
    """The date column as days (datetime64[D]); a DataError at the first row that is not the day after the one
    before it."""
    days = time_values(table, column)
    if days.dtype.kind != "M":
        raise DataError(f"{table.where(0)}: column {column!r}: expected dates such as 2015-12-31, found "
                        f"{table.columns[column][0]!r}")
    days = days.astype("datetime64[D]")
    breaks = np.flatnonzero(np.diff(days) != np.timedelta64(1, "D"))
    if len(breaks):
        i = int(breaks[0]) + 1
        raise DataError(f"{table.where(i)}: column {column!r}: {days[i]} is not the day after {days[i - 1]}; the rows "
                        f"must be consecutive days")
    return days
