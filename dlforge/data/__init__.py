"""Datasets. Importing this package registers every built-in dataset."""

from dlforge.data import (  # noqa: F401  (each module registers its datasets)
    chartext,  # shakespeare_char, text_files
    genre,  # shakespeare_genre
    images,  # fashion_mnist, idx, digits, image_folder
    masked_lm,  # shakespeare_mlm
    sequences,  # seattle_weather
    sft,  # sft_jsonl
    tabular,  # iris, wine, breast_cancer, diabetes, fair, csv, parquet
    timeseries,  # co2, sunspots, seattle_temps, timeseries_csv
    tokens,  # lm_text, token_shards
    translation,  # bible_translation
)
from dlforge.data.dataset import DataBundle, TensorDictDataset, collate_batch

__all__ = ["DataBundle", "TensorDictDataset", "collate_batch"]
