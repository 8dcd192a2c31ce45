"""Datasets. Importing this package registers every built-in dataset."""

from dlforge.data import tabular  # noqa: F401  (registers iris, wine, breast_cancer, diabetes, fair, csv, parquet)
from dlforge.data.dataset import DataBundle, TensorDictDataset, collate_batch

__all__ = ["DataBundle", "TensorDictDataset", "collate_batch"]
