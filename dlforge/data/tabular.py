"""Tabular data: the bundled real sets (iris, wine, breast_cancer, diabetes, affairs, randhie) and the user's CSV or
Parquet files.

Every source becomes a `Table` (read by `dlforge.data.table_reader`), and one `build_tabular` does the rest the same
way for all: pick the target and feature columns, read the target as class labels or as numbers, split train/val/test
(stratified for classification), learn the one-hot categories and the feature scaling on the train split only, and
write all of it into `preprocessing`, so that `prepare_inputs` transforms new rows exactly as the training rows were.

    data: {name: csv, path: data/customers.csv, target: churned, class_weights: balanced}

Label ids are the sorted label names (numerically sorted when the labels are numbers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from dlforge.aliases import DATASETS
from dlforge.config import DataConfig
from dlforge.data.class_weights import balanced_class_weights
from dlforge.data.dataset import DataBundle, TensorDictDataset, fingerprint_tensors
from dlforge.data.table_reader import (
    Table,
    as_text,
    column_kind,
    load_affairs,
    load_randhie,
    load_sklearn,
    numeric_values,
    read_csv,
    read_parquet,
    read_table,
    text_values,
)
from dlforge.errors import ConfigError, DataError, warn
from dlforge.registry import register_dataset

BUNDLED = ("iris", "wine", "breast_cancer", "diabetes", "affairs", "randhie")
FILE_SOURCES = ("csv", "parquet")
MAX_CLASS_VALUES = 20  # task "auto": an integer target with at most this many distinct values is a class label


class TabularConfig(DataConfig):
    """A table with one target column: a bundled data set, or a CSV or Parquet file given by `path`."""

    path: str | None = Field(None, description="the CSV or Parquet file (datasets csv and parquet only)")
    target: str | None = Field(None, description="target column; the bundled sets know theirs")
    features: list[str] | None = Field(None, min_length=1, description="feature columns; default: all but the target")
    categorical: list[str] | Literal["auto"] = Field("auto", description="one-hot columns; auto: columns of text")
    task: Literal["auto", "classification", "regression"] = Field(
        "auto", description=f"auto: classification for text or integer targets with <= {MAX_CLASS_VALUES} values"
    )
    target_threshold: float | None = Field(None, description="binary classification of target > threshold")
    val_fraction: float = Field(0.15, ge=0, lt=0.5, description="share of rows for validation (0: none)")
    test_fraction: float = Field(0.15, ge=0, lt=0.5, description="share of rows for the test split (0: none)")
    split_seed: int = 0
    scale: Literal["standard", "none"] = Field("standard", description="standardize numeric features (train stats)")
    scale_target: bool = Field(True, description="regression: standardize the target (train stats)")
    class_weights: Literal["none", "balanced"] = Field("none", description="balanced: n / (classes * count), train")

    @model_validator(mode="after")
    def _check(self) -> TabularConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ConfigError(
                f"data.test_fraction: val_fraction + test_fraction must be < 0.9, "
                f"got {self.val_fraction} + {self.test_fraction}"
            )
        if self.name in FILE_SOURCES and not self.path:
            raise ConfigError(f"data.path: required for dataset {self.name!r}")
        if self.name in BUNDLED and self.path is not None:
            raise ConfigError(f"data.path: not used by the bundled dataset {self.name!r}; remove it")
        if self.task == "regression" and self.target_threshold is not None:
            raise ConfigError("data.target_threshold: makes the task classification; set data.task to auto")
        if self.task == "regression" and self.class_weights != "none":
            raise ConfigError("data.class_weights: only for classification; data.task is 'regression'")
        return self


# --- the registered data sets ----------------------------------------------------------------------------------


@register_dataset(TabularConfig)
def iris(config: TabularConfig) -> DataBundle:
    """Iris flowers (scikit-learn): 150 rows, 4 measurements, 3 species."""
    return build_tabular(table_of(config), config)


@register_dataset(TabularConfig)
def wine(config: TabularConfig) -> DataBundle:
    """Wine recognition (scikit-learn): 178 rows, 13 chemical measurements, 3 cultivars."""
    return build_tabular(table_of(config), config)


@register_dataset(TabularConfig)
def breast_cancer(config: TabularConfig) -> DataBundle:
    """Breast cancer Wisconsin (scikit-learn): 569 rows, 30 features, benign or malignant."""
    return build_tabular(table_of(config), config)


@register_dataset(TabularConfig)
def diabetes(config: TabularConfig) -> DataBundle:
    """Diabetes progression (scikit-learn): 442 rows, 10 features, regression."""
    return build_tabular(table_of(config), config)


@register_dataset(TabularConfig)
def affairs(config: TabularConfig) -> DataBundle:
    """Affairs survey (statsmodels' 'fair', the old name): 6366 rows, 8 features; try target_threshold: 0."""
    return build_tabular(table_of(config), config)


@register_dataset(TabularConfig)
def randhie(config: TabularConfig) -> DataBundle:
    """RAND Health Insurance Experiment (statsmodels' raw file): 19,935 person-years; target mdvis (doctor visits)."""
    return build_tabular(table_of(config), config)


@register_dataset(TabularConfig)
def csv(config: TabularConfig) -> DataBundle:
    """A CSV file with a header line: data.path, data.target."""
    return build_tabular(table_of(config), config)


@register_dataset(TabularConfig)
def parquet(config: TabularConfig) -> DataBundle:
    """A Parquet file (needs pyarrow): data.path, data.target."""
    return build_tabular(table_of(config), config)


def table_of(config: TabularConfig) -> Table:
    """The raw table a built-in tabular data set reads: a bundled set, or the file at `data.path`."""
    loaders = {"iris": lambda: load_sklearn("iris"), "wine": lambda: load_sklearn("wine"),
               "breast_cancer": lambda: load_sklearn("breast_cancer"), "diabetes": lambda: load_sklearn("diabetes"),
               "affairs": load_affairs, "randhie": load_randhie, "csv": lambda: read_csv(config.path),
               "parquet": lambda: read_parquet(config.path)}
    name = DATASETS.get(config.name, config.name)  # an old name ('fair') reads its new one's table
    if name not in loaders:
        raise DataError(f"data.name: {config.name!r} is not a built-in tabular data set ({', '.join(loaders)})")
    return loaders[name]()


def split_rows(config: TabularConfig) -> tuple[Table, dict[str, np.ndarray]]:
    """The raw table and the row indices of each split (train, val, test) exactly as `build_tabular` draws them,
    all columns kept: what a run was evaluated on, with columns that were not its features (a sensitive attribute)."""
    table = table_of(config)
    target, _ = _choose_columns(table, config)
    task, y_all, label_names, _ = _read_target(table, target, config)
    splits = _split_rows_of(table, config, task, y_all, label_names)
    return table, dict(zip(("train", "val", "test"), splits, strict=True))


# --- building --------------------------------------------------------------------------------------------------


def build_tabular(table: Table, config: TabularConfig) -> DataBundle:
    """Validate, encode, split and scale `table` as `config` says; the one path every tabular source takes."""
    target, features = _choose_columns(table, config)
    task, y_all, label_names, target_kind = _read_target(table, target, config)
    kinds = _feature_kinds(table, features, config)
    raw = {f: numeric_values(table, f) if kinds[f] == "numeric" else text_values(table, f) for f in features}
    train, val, test = _split_rows_of(table, config, task, y_all, label_names)
    specs = [_fit_feature(f, kinds[f], raw[f], train, config.scale, table.source) for f in features]
    warn_unseen_categories(table, raw, specs, np.sort(np.concatenate([val, test])), "the training rows")
    x = torch.from_numpy(_encode(raw, specs))  # (N, F)

    target_mean, target_std = 0.0, 1.0
    if task == "classification":
        y = torch.from_numpy(y_all.astype(np.int64))
    else:
        if config.scale_target:
            target_mean, target_std = float(y_all[train].mean()), _nonzero(float(y_all[train].std()))
        y = torch.from_numpy(((y_all - target_mean) / target_std).astype(np.float32))

    feature_names = [name for spec in specs for name in _column_names(spec)]
    preprocessing = {
        "kind": "tabular",
        "features": specs,
        "feature_names": feature_names,
        "target": target,
        "target_kind": target_kind,
        "task": task,
        "label_names": label_names,
        "label_to_id": {name: i for i, name in enumerate(label_names)} if label_names else None,
        "target_threshold": config.target_threshold,
        "target_mean": target_mean,
        "target_std": target_std,
    }
    num_classes = len(label_names) if label_names else None
    weights = None
    if config.class_weights == "balanced":
        weights = balanced_class_weights(y_all[train], label_names, table.source)
    info = {
        "task": task, "num_classes": num_classes, "label_names": label_names, "feature_names": feature_names,
        "target": target, "source": table.source, "n_train": len(train), "n_val": len(val), "n_test": len(test),
        "target_mean": target_mean, "target_std": target_std,
    }  # fmt: skip

    def subset(rows: np.ndarray) -> TensorDictDataset | None:
        index = torch.from_numpy(rows)
        return TensorDictDataset({"x": x[index], "y": y[index]}) if len(rows) else None

    return DataBundle(
        subset(train),
        subset(val),
        subset(test),
        info=info,
        model_defaults={"in_features": x.shape[1], "out_features": num_classes or 1, "class_weights": weights},
        preprocessing=preprocessing,
        fingerprint=_fingerprint(raw, specs, y_all, config.split_seed),
    )


def _split_rows_of(table: Table, config: TabularConfig, task: str, y_all: np.ndarray, label_names: list[str] | None):
    """Row indices (train, val, test) of a table whose target was read (`_read_target`): stratified for classes."""
    classes = np.asarray(label_names)[y_all] if task == "classification" else None
    return split_indices(len(table), config, classes, table.source)


def split_indices(
    n: int, config: TabularConfig, classes: np.ndarray | None = None, source: str = "data"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of train, val and test: sklearn's `train_test_split`, stratified by `classes` when given.

    Test rows are split off first, then validation rows from the rest; the same seed gives the same split.
    """
    rest, test = _split(np.arange(n), classes, config.test_fraction, config.split_seed, "test", source)
    rest_classes = classes[rest] if classes is not None else None
    val_share = config.val_fraction / (1.0 - config.test_fraction)
    train, val = _split(rest, rest_classes, val_share, config.split_seed, "val", source)
    return train, val, test


def _split(rows: np.ndarray, classes: np.ndarray | None, fraction: float, seed: int, part: str, source: str):
    from sklearn.model_selection import train_test_split

    if fraction == 0:
        return rows, rows[:0]
    try:
        return train_test_split(rows, test_size=fraction, random_state=seed, stratify=classes)
    except ValueError as exc:
        if classes is None:
            raise DataError(f"{source}: cannot split {len(rows)} rows for the {part} split ({exc})") from None
        names, counts = np.unique(classes, return_counts=True)
        if counts.min() < 2:
            rare = names[counts.argmin()]
            left = " left after the test split" if part == "val" else ""
            raise DataError(
                f"{source}: class {str(rare)!r} has only {counts.min()} row(s){left}; a stratified {part} split needs "
                f"at least 2 of each class; add rows of that class or set data.{part}_fraction: 0"
            ) from None
        raise DataError(
            f"{source}: a stratified {part} split of {len(rows)} rows into {fraction:.0%} cannot hold one row of each "
            f"of the {len(names)} classes; raise data.{part}_fraction or add rows"
        ) from None


def _choose_columns(table: Table, config: TabularConfig) -> tuple[str, list[str]]:
    target = config.target or table.default_target
    if target is None:
        columns = ", ".join(table.columns)
        raise ConfigError(f"data.target: required for dataset {config.name!r}; columns in {table.source}: {columns}")
    table.require(target, "target")
    if config.features is None:
        features = [c for c in table.columns if c != target]
    else:
        features = list(dict.fromkeys(config.features))  # drop repeats, keep the order
        for name in features:
            table.require(name, "feature")
        if target in features:
            raise DataError(f"{table.source}: data.features includes the target column {target!r}")
    if not features:
        raise DataError(f"{table.source}: no feature columns besides the target {target!r}")
    return target, features


def _read_target(table: Table, name: str, config: TabularConfig):
    """(task, y, label_names, target_kind): y holds class ids (int) or the raw numbers (float) of every row."""
    if config.target_threshold is not None:
        values = numeric_values(table, name)
        label_names = threshold_labels(config.target_threshold)
        ids = (values > config.target_threshold).astype(np.int64)
        _require_two_classes(table, name, label_names, ids)
        return "classification", ids, label_names, "numeric"
    kind = column_kind(table, name, mixed_ok=True)
    if kind == "text":
        if config.task == "regression":
            numeric_values(table, name)  # raises at the first cell that is not a number
        texts = np.asarray(text_values(table, name))
        label_names, ids = np.unique(texts, return_inverse=True)
        label_names = [str(s) for s in label_names]
    else:
        values = numeric_values(table, name)
        distinct, ids = np.unique(values, return_inverse=True)
        integral = bool(np.all(distinct == np.round(distinct)))
        task = config.task
        if task == "auto":
            task = "classification" if integral and len(distinct) <= MAX_CLASS_VALUES else "regression"
        if task == "regression":
            return "regression", values, None, "numeric"
        label_names = [as_text(float(v)) for v in distinct]
    _require_two_classes(table, name, label_names, ids)
    return "classification", ids.astype(np.int64), label_names, kind


def threshold_labels(threshold: float) -> list[str]:
    """Label names of a target binarized at `threshold`: ['<= t', '> t']."""
    return [f"<= {as_text(float(threshold))}", f"> {as_text(float(threshold))}"]


def _require_two_classes(table: Table, name: str, label_names: list[str], ids: np.ndarray) -> None:
    present = np.unique(ids)
    if len(present) < 2:
        raise DataError(
            f"{table.source}: target column {name!r} has only one class ({label_names[present[0]]!r}); "
            f"classification needs at least two"
        )


def _feature_kinds(table: Table, features: list[str], config: TabularConfig) -> dict[str, str]:
    if config.categorical == "auto":
        return {f: "categorical" if column_kind(table, f) == "text" else "numeric" for f in features}
    for name in config.categorical:
        table.require(name, "categorical")
        if name not in features:
            raise DataError(f"{table.source}: categorical column {name!r} is not among the feature columns")
    return {f: "categorical" if f in config.categorical else "numeric" for f in features}


def _fit_feature(name: str, kind: str, values, train: np.ndarray, scale: str, source: str) -> dict[str, Any]:
    """What it takes to encode one feature column, learned from the train rows only."""
    if kind == "categorical":
        categories = sorted({values[i] for i in train})
        if len(categories) > max(50, len(train) // 2):
            raise DataError(
                f"{source}: column {name!r} has {len(categories)} different texts in {len(train)} train rows, too "
                f"many to one-hot encode (an id or free text?); leave it out with data.features"
            )
        return {"name": name, "kind": "categorical", "categories": categories}
    mean, std = 0.0, 1.0
    if scale == "standard":  # population std, as sklearn's StandardScaler; a constant column keeps std 1
        mean, std = float(values[train].mean()), _nonzero(float(values[train].std()))
    return {"name": name, "kind": "numeric", "mean": mean, "std": std}


def warn_unseen_categories(table: Table, raw: dict[str, Any], specs: list[dict[str, Any]], rows, seen_in: str
                           ) -> None:
    """One warning per categorical column whose values at `rows` hold a category that the encoder did not learn from
    `seen_in`: it is encoded as unknown, a one-hot block of zeros (scikit-learn's OneHotEncoder with
    handle_unknown="ignore", Ludwig's <UNK>)."""
    for spec in specs:
        if spec["kind"] != "categorical":
            continue
        known, values = set(spec["categories"]), raw[spec["name"]]
        unseen = [int(i) for i in rows if values[i] not in known]
        if not unseen:
            continue
        first = unseen[0]
        more = f"; {len(unseen)} rows hold such values" if len(unseen) > 1 else ""
        warn(f"{table.where(first)}: column {spec['name']!r}: {values[first]!r} is not among the categories of "
             f"{seen_in} ({_listing(spec['categories'])}); encoded as unknown (all zeros){more}")


def _listing(names: list[str], most: int = 10) -> str:
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown}, ... ({len(names)} in all)"


def _column_names(spec: dict[str, Any]) -> list[str]:
    if spec["kind"] == "categorical":
        return [f"{spec['name']}={c}" for c in spec["categories"]]
    return [spec["name"]]


def _encode(raw: dict[str, Any], specs: list[dict[str, Any]]) -> np.ndarray:
    """Feature matrix (N, F) float32: scaled numbers, and one-hot blocks (all zeros for an unseen category)."""
    blocks = []
    for spec in specs:
        values = raw[spec["name"]]
        if spec["kind"] == "numeric":
            blocks.append(((values - spec["mean"]) / spec["std"])[:, None])
            continue
        index = {c: j for j, c in enumerate(spec["categories"])}
        codes = np.array([index.get(v, -1) for v in values], dtype=np.int64)
        onehot = np.zeros((len(values), len(index)))
        known = np.nonzero(codes >= 0)[0]
        onehot[known, codes[known]] = 1.0
        blocks.append(onehot)
    return np.concatenate(blocks, axis=1).astype(np.float32)


def _fingerprint(raw: dict[str, Any], specs: list[dict[str, Any]], y_all: np.ndarray, seed: int) -> str:
    # The data before the split (numbers unscaled, categories by their sorted index over all rows) and the seed.
    columns = []
    for spec in specs:
        values = raw[spec["name"]]
        if spec["kind"] == "categorical":
            values = np.unique(np.asarray(values), return_inverse=True)[1].astype(np.float64)
        columns.append(np.asarray(values, dtype=np.float64))
    x = torch.from_numpy(np.stack(columns, axis=1))
    return fingerprint_tensors(x, torch.from_numpy(np.asarray(y_all)), torch.tensor([seed]))


def _nonzero(std: float) -> float:
    return std if std > 0 else 1.0


# --- new inputs ------------------------------------------------------------------------------------------------


def prepare_inputs(preprocessing: dict[str, Any], path: str | Path,
                   with_target: bool = True) -> tuple[torch.Tensor, torch.Tensor | None, list]:
    """Read new rows from a CSV or Parquet file and transform them as the training rows were.

    Returns x (N, F) float32; y (class ids, or scaled numbers for regression), or None when the file has no target
    column; and where each row came from (CSV line numbers, header = 1; Parquet row numbers) for reporting.
    """
    return encode_table(preprocessing, read_table(path), with_target)


def encode_table(preprocessing: dict[str, Any], table: Table,
                 with_target: bool = True) -> tuple[torch.Tensor, torch.Tensor | None, list]:
    """`prepare_inputs` of rows already read (a `Table`): x, y (or None) and where each row came from."""
    raw = {}
    for spec in preprocessing["features"]:
        name = spec["name"]
        table.require(name, "feature")
        raw[name] = numeric_values(table, name) if spec["kind"] == "numeric" else text_values(table, name)
    warn_unseen_categories(table, raw, preprocessing["features"], range(len(table)), "training")
    x = torch.from_numpy(_encode(raw, preprocessing["features"]))
    target = preprocessing["target"]
    y = _target_tensor(table, preprocessing) if with_target and target in table.columns else None
    return x, y, list(table.lines)


def _target_tensor(table: Table, preprocessing: dict[str, Any]) -> torch.Tensor:
    name = preprocessing["target"]
    if preprocessing["task"] == "regression":
        values = numeric_values(table, name)
        scaled = (values - preprocessing["target_mean"]) / preprocessing["target_std"]
        return torch.from_numpy(scaled.astype(np.float32))
    threshold = preprocessing["target_threshold"]
    if threshold is not None:
        return torch.from_numpy((numeric_values(table, name) > threshold).astype(np.int64))
    if preprocessing["target_kind"] == "numeric":
        labels = [as_text(float(v)) for v in numeric_values(table, name)]
    else:
        labels = text_values(table, name)
    label_to_id = preprocessing["label_to_id"]
    for i, label in enumerate(labels):
        if label not in label_to_id:
            known = ", ".join(preprocessing["label_names"])
            raise DataError(f"{table.where(i)}: column {name!r}: unknown label {label!r}; expected one of {known}")
    return torch.tensor([label_to_id[label] for label in labels], dtype=torch.int64)


def decode_labels(preprocessing: dict[str, Any], ids) -> list[str]:
    """Class ids (a tensor, array or list) -> their label names."""
    names = preprocessing.get("label_names")
    if not names:
        raise DataError("decode_labels: the model predicts numbers (regression), not class labels")
    return [names[int(i)] for i in torch.as_tensor(ids).reshape(-1).tolist()]


def unscale_target(preprocessing: dict[str, Any], values) -> torch.Tensor:
    """Regression outputs back in the target's units: values * target_std + target_mean."""
    values = torch.as_tensor(values, dtype=torch.float32)
    return values * preprocessing["target_std"] + preprocessing["target_mean"]
