"""The bundled RAND HIE table (statsmodels' raw file), and a run's split rebuilt with its raw rows (`split_rows`),
which `dlforge fairness` audits by columns that were not features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from dlforge.data.table_reader import RANDHIE_COLUMNS, load_randhie
from dlforge.data.tabular import TabularConfig, build_tabular, encode_table, split_rows, table_of
from dlforge.errors import DataError

PRESET = Path(__file__).resolve().parents[2] / "dlforge" / "configs" / "randhie-mlp.yaml"


def raw_file() -> pd.DataFrame:
    import statsmodels

    return pd.read_csv(Path(statsmodels.__file__).parent / "datasets" / "randhie" / "src" / "randhie.csv")


def test_randhie_is_the_raw_file_less_rows_without_education_or_a_recorded_race():
    table = load_randhie()
    raw = raw_file()
    kept = raw[raw["educdec"].notna() & raw["black"].isin([0.0, 1.0])]
    assert len(raw) == 20190 and len(table) == len(kept) == 19935
    assert tuple(table.columns) == RANDHIE_COLUMNS and table.default_target == "mdvis"
    for name in RANDHIE_COLUMNS:
        assert np.array_equal(np.asarray(table.columns[name], dtype=float), kept[name].to_numpy(dtype=float)), name
    assert table.lines[:3] == [2, 3, 4]  # file lines: the header is line 1
    assert table.lines[-1] == kept.index[-1] + 2
    assert set(table.columns["black"]) == {"0", "1"} and set(table.columns["female"]) == {"0", "1"}


def test_split_rows_are_the_rows_build_tabular_trains_and_tests_on():
    data = yaml.safe_load(PRESET.read_text())["data"]
    config = TabularConfig.model_validate(data)
    assert not {"female", "black", "fchild"} & set(config.features)  # the audit's groups are not features
    bundle = build_tabular(load_randhie(), config)
    table, splits = split_rows(config)
    assert {k: len(v) for k, v in splits.items()} == {"train": len(bundle.train), "val": len(bundle.val),
                                                      "test": len(bundle.test)}
    for split in ("val", "test"):
        rows = table.take(splits[split])
        x, y, lines = encode_table(bundle.preprocessing, rows)
        ds = getattr(bundle, split)
        assert np.array_equal(x.numpy(), ds.tensors["x"].numpy()) and np.array_equal(y.numpy(), ds.tensors["y"].numpy())
        assert lines == [table.lines[i] for i in splits[split]]
        assert set(rows.columns) == set(RANDHIE_COLUMNS)  # female and black are still there
    share = np.mean([float(v) > 0 for v in table.take(splits["test"]).columns["mdvis"]])
    assert abs(share - 0.688) < 0.01  # stratified: the whole set's share of person-years with a visit


def test_table_of_reads_files_and_refuses_other_data_sets(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,y\n1,0\n2,1\n")
    assert table_of(TabularConfig(name="csv", path=str(path), target="y")).columns == {"a": ["1", "2"], "y": ["0", "1"]}
    with pytest.raises(DataError, match="^data.name: 'fashion_mnist' is not a built-in tabular data set"):
        table_of(TabularConfig.model_construct(name="fashion_mnist"))
