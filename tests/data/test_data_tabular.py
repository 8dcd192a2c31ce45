"""Tabular data: the bundled sets, splits, scaling, encoding, new inputs, and every error a person can cause."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from sklearn.datasets import load_iris
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_class_weight

from dlforge.data.class_weights import balanced_class_weights
from dlforge.data.tabular import (
    TabularConfig,
    affairs,
    breast_cancer,
    decode_labels,
    diabetes,
    iris,
    prepare_inputs,
    split_indices,
    unscale_target,
    wine,
)
from dlforge.data.tabular import csv as csv_dataset
from dlforge.data.tabular import parquet as parquet_dataset
from dlforge.errors import ConfigError, DataError
from dlforge.registry import dataset_entry


def write(tmp_path, text: str, name: str = "data.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def people_csv(tmp_path, n: int = 60, name: str = "people.csv"):
    """A small table with numbers, a text column and a text label: age, income, color, label."""
    rng = np.random.default_rng(0)
    lines = ["age,income,color,label"]
    for i in range(n):
        color = ["red", "green", "blue"][i % 3]
        label = "yes" if i % 2 else "no"
        lines.append(f"{rng.integers(18, 80)},{rng.normal(50, 10):.3f},{color},{label}")
    return write(tmp_path, "\n".join(lines) + "\n", name)


def rows(bundle, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    ds = getattr(bundle, split)
    return ds.tensors["x"], ds.tensors["y"]


def total(bundle) -> int:
    return bundle.info["n_train"] + bundle.info["n_val"] + bundle.info["n_test"]


# --- bundled sets ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "builder, n, f, classes",
    [(iris, 150, 4, 3), (wine, 178, 13, 3), (breast_cancer, 569, 30, 2), (diabetes, 442, 10, None)],
)
def test_sklearn_sets_load_with_their_shapes(builder, n, f, classes):
    bundle = builder(TabularConfig(name=builder.__name__))
    assert total(bundle) == n
    assert bundle.model_defaults["in_features"] == f
    assert bundle.info["num_classes"] == classes
    assert bundle.model_defaults["out_features"] == (classes or 1)
    x, y = rows(bundle, "train")
    assert x.shape == (bundle.info["n_train"], f) and x.dtype == torch.float32
    assert y.dtype == (torch.int64 if classes else torch.float32) and y.shape == (len(x),)
    json.dumps(bundle.preprocessing)  # JSON-serializable


def test_affairs_loads_through_statsmodels_as_regression_or_thresholded():
    pytest.importorskip("statsmodels")
    bundle = affairs(TabularConfig(name="affairs"))
    assert total(bundle) == 6366 and bundle.info["task"] == "regression"
    assert bundle.info["target"] == "affairs" and bundle.model_defaults["in_features"] == 8

    binary = affairs(TabularConfig(name="affairs", target_threshold=0))
    assert binary.info["label_names"] == ["<= 0", "> 0"] and binary.info["num_classes"] == 2
    from statsmodels.datasets import fair as sm_fair

    counts = sm_fair.load_pandas().data["affairs"].to_numpy()
    ys = torch.cat([rows(binary, s)[1] for s in ("train", "val", "test")])
    assert ys.sum().item() == int((counts > 0).sum())


def test_missing_statsmodels_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "statsmodels.datasets", None)
    with pytest.raises(DataError, match=r"pip install 'dlforge\[datasets\]'"):
        affairs(TabularConfig(name="affairs"))


def test_every_builder_is_registered_with_a_docstring():
    for name in ("iris", "wine", "breast_cancer", "diabetes", "affairs", "csv", "parquet"):
        entry = dataset_entry(name)
        assert entry.config_cls is TabularConfig and entry.doc


# --- splits, scaling, weights ----------------------------------------------------------------------------------


def test_stratified_split_keeps_class_proportions():
    bundle = breast_cancer(TabularConfig(name="breast_cancer", val_fraction=0.2, test_fraction=0.2))
    shares = [rows(bundle, s)[1].float().mean().item() for s in ("train", "val", "test")]
    assert max(shares) - min(shares) < 0.02
    counts = torch.bincount(rows(iris(TabularConfig(name="iris")), "test")[1])
    assert counts.max() - counts.min() <= 1  # 23 test rows: 8/8/7


def test_split_is_deterministic_per_seed_and_differs_across_seeds():
    a, b = (iris(TabularConfig(name="iris", split_seed=1)) for _ in range(2))
    c = iris(TabularConfig(name="iris", split_seed=2))
    assert torch.equal(rows(a, "train")[0], rows(b, "train")[0]) and a.fingerprint == b.fingerprint
    assert not torch.equal(rows(a, "train")[0], rows(c, "train")[0]) and a.fingerprint != c.fingerprint


def test_zero_fraction_means_no_split():
    bundle = iris(TabularConfig(name="iris", val_fraction=0, test_fraction=0))
    assert bundle.val is None and bundle.test is None and bundle.info["n_train"] == 150


def test_scaling_uses_train_statistics_only_like_standard_scaler():
    config = TabularConfig(name="iris", split_seed=3)
    bundle = iris(config)
    data = load_iris()
    classes = data.target_names[data.target]
    train, val, test = split_indices(150, config, classes)
    scaler = StandardScaler().fit(data.data[train])
    for split, index in (("train", train), ("val", val), ("test", test)):
        expected = torch.tensor(scaler.transform(data.data[index]), dtype=torch.float32)
        torch.testing.assert_close(rows(bundle, split)[0], expected, rtol=1e-5, atol=1e-5)
    x_train, x_val = rows(bundle, "train")[0], rows(bundle, "val")[0]
    torch.testing.assert_close(x_train.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(x_train.std(0, unbiased=False), torch.ones(4), atol=1e-5, rtol=0)
    assert x_val.mean(0).abs().max() > 1e-3  # validation statistics are not forced to 0


def test_regression_target_is_scaled_with_train_statistics_and_unscales():
    bundle = diabetes(TabularConfig(name="diabetes"))
    y_train = rows(bundle, "train")[1]
    assert abs(y_train.mean().item()) < 1e-5 and abs(y_train.std(unbiased=False).item() - 1) < 1e-4
    restored = unscale_target(bundle.preprocessing, rows(bundle, "val")[1])
    assert 25 <= restored.min().item() and restored.max().item() <= 346  # diabetes targets lie in [25, 346]
    plain = diabetes(TabularConfig(name="diabetes", scale_target=False))
    assert (plain.info["target_mean"], plain.info["target_std"]) == (0.0, 1.0)
    assert rows(plain, "train")[1].max().item() > 100


def test_balanced_class_weights_match_sklearn():
    bundle = wine(TabularConfig(name="wine", class_weights="balanced"))
    y_train = rows(bundle, "train")[1].numpy()
    expected = compute_class_weight("balanced", classes=np.arange(3), y=y_train)
    np.testing.assert_allclose(bundle.model_defaults["class_weights"], expected)


def test_the_one_class_weight_function_is_sklearns_and_names_a_class_without_training_sample():
    ids = np.array([0, 0, 0, 1, 2, 2])
    np.testing.assert_allclose(balanced_class_weights(ids, ["a", "b", "c"], "t.csv"),
                               compute_class_weight("balanced", classes=np.arange(3), y=ids))
    with pytest.raises(DataError, match=r"^t\.csv: class 'b' has no sample in the train split"):
        balanced_class_weights(np.array([0, 2, 2]), ["a", "b", "c"], "t.csv")


# --- files, encoding, new inputs -------------------------------------------------------------------------------


def test_csv_one_hot_categories_come_from_train_and_an_unseen_one_is_zeros_with_a_warning(tmp_path, capsys):
    path = people_csv(tmp_path)
    bundle = csv_dataset(TabularConfig(name="csv", path=str(path), target="label"))
    names = bundle.info["feature_names"]
    assert names == ["age", "income", "color=blue", "color=green", "color=red"]
    assert bundle.info["label_names"] == ["no", "yes"] and bundle.info["source"] == str(path)
    one_hot = rows(bundle, "train")[0][:, 2:]
    assert torch.equal(one_hot.sum(1), torch.ones(len(one_hot)))
    assert capsys.readouterr().err == ""  # every color of the val and test rows is among the training rows'

    new = write(tmp_path, "color,income,age\nred,50,30\npurple,50,30\nred,40,20\nteal,1,2\n", "new.csv")
    x, y, lines = prepare_inputs(bundle.preprocessing, new)
    assert y is None and lines == [2, 3, 4, 5] and x.shape == (4, 5)
    assert x[1, 2:].tolist() == [0, 0, 0] and x[2, 2:].tolist() == [0, 0, 1]
    # as scikit-learn's OneHotEncoder(handle_unknown="ignore") and Ludwig's <UNK>, but said: one line per column
    assert capsys.readouterr().err == (
        f"warning: {new}:3: column 'color': 'purple' is not among the categories of training (blue, green, red); "
        "encoded as unknown (all zeros); 2 rows hold such values\n")


def test_categories_are_learned_on_the_train_split_only(tmp_path, capsys):
    text = "code,y\n" + "".join(f"c{i},{i % 2}\n" for i in range(40))
    bundle = csv_dataset(TabularConfig(name="csv", path=str(write(tmp_path, text)), target="y"))
    assert len(bundle.info["feature_names"]) == bundle.info["n_train"]
    assert rows(bundle, "val")[0].sum().item() == 0  # every val code is unseen in train
    warning = capsys.readouterr().err
    assert warning.startswith("warning: ") and warning.count("\n") == 1
    assert "column 'code': " in warning and "is not among the categories of the training rows (c" in warning
    assert "encoded as unknown (all zeros); 12 rows hold such values" in warning  # the 6 val and 6 test rows


def test_prepare_inputs_reproduces_the_training_tensors(tmp_path):
    path = people_csv(tmp_path)
    config = TabularConfig(name="csv", path=str(path), target="label", split_seed=5)
    bundle = csv_dataset(config)
    x, y, lines = prepare_inputs(json.loads(json.dumps(bundle.preprocessing)), path)
    assert lines == list(range(2, 62))
    classes = np.asarray(decode_labels(bundle.preprocessing, y))
    train, val, _ = split_indices(60, config, classes)
    torch.testing.assert_close(x[train], rows(bundle, "train")[0])
    torch.testing.assert_close(x[val], rows(bundle, "val")[0])
    assert torch.equal(y[train], rows(bundle, "train")[1])


def test_prepare_inputs_regression_round_trip(tmp_path):
    text = "a,b,price\n" + "".join(f"{i},{i * i % 7},{10.5 * i + 3}\n" for i in range(30))
    path = write(tmp_path, text)
    config = TabularConfig(name="csv", path=str(path), target="price", test_fraction=0)
    bundle = csv_dataset(config)
    assert bundle.info["task"] == "regression" and bundle.test is None
    x, y, _ = prepare_inputs(bundle.preprocessing, path)
    train, _, _ = split_indices(30, config)
    torch.testing.assert_close(x[train], rows(bundle, "train")[0])
    torch.testing.assert_close(y[train], rows(bundle, "train")[1])
    torch.testing.assert_close(unscale_target(bundle.preprocessing, y[:3]), torch.tensor([3.0, 13.5, 24.0]))


def test_parquet_gives_the_same_tensors_as_csv(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = people_csv(tmp_path)
    from_csv = csv_dataset(TabularConfig(name="csv", path=str(path), target="label"))
    columns = list(zip(*[line.split(",") for line in path.read_text().splitlines()[1:]], strict=True))
    table = pa.table(
        {
            "age": [int(v) for v in columns[0]],
            "income": [float(v) for v in columns[1]],
            "color": list(columns[2]),
            "label": list(columns[3]),
        }
    )
    pq.write_table(table, tmp_path / "people.parquet")
    from_parquet = parquet_dataset(TabularConfig(name="parquet", path=str(tmp_path / "people.parquet"), target="label"))
    for split in ("train", "val", "test"):
        torch.testing.assert_close(rows(from_parquet, split)[0], rows(from_csv, split)[0])
    x, y, lines = prepare_inputs(from_csv.preprocessing, tmp_path / "people.parquet")
    assert lines[:2] == [1, 2] and y is not None and x.shape == (60, 5)


def test_missing_pyarrow_names_the_extra(tmp_path, monkeypatch):
    path = write(tmp_path, "x", "data.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(DataError, match=r"pip install 'dlforge\[parquet\]'"):
        parquet_dataset(TabularConfig(name="parquet", path=str(path), target="y"))


def test_bom_quoted_fields_and_numeric_labels(tmp_path):
    text = '\ufeffsize,"kind",y\n1.5,"big, round",2\n2.5,small,10\n3.5,"big, round",2\n4,small,10\n'
    bundle = csv_dataset(
        TabularConfig(name="csv", path=str(write(tmp_path, text)), target="y", val_fraction=0, test_fraction=0)
    )
    assert bundle.info["feature_names"] == ["size", "kind=big, round", "kind=small"]
    assert bundle.info["label_names"] == ["2", "10"]  # numeric labels sort as numbers
    assert decode_labels(bundle.preprocessing, torch.tensor([1, 0])) == ["10", "2"]


def test_explicit_categorical_and_task(tmp_path):
    text = "zip,n,y\n" + "".join(f"{1000 + i % 4},{i},{i % 3}\n" for i in range(30))
    config = TabularConfig(
        name="csv", path=str(write(tmp_path, text)), target="y", categorical=["zip"], task="regression"
    )
    bundle = csv_dataset(config)
    assert bundle.info["feature_names"][:4] == ["zip=1000", "zip=1001", "zip=1002", "zip=1003"]
    assert bundle.info["task"] == "regression" and bundle.info["num_classes"] is None


# --- errors a person can cause ---------------------------------------------------------------------------------


def load(path, **fields):
    return csv_dataset(TabularConfig(name="csv", path=str(path), **fields))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=f"^{tmp_path / 'nope.csv'}: not found; expected a CSV file$"):
        load(tmp_path / "nope.csv", target="y")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=f"^{path}: empty file; expected a header line and data rows$"):
        load(path, target="y")


def test_header_only(tmp_path):
    path = write(tmp_path, "a,b,y\n")
    with pytest.raises(DataError, match=rf"^{path}: no data rows after the header \(line 1\)$"):
        load(path, target="y")


def test_ragged_row_names_the_line_after_a_multiline_field(tmp_path):
    path = write(tmp_path, 'a,b,y\n1,"two\nlines",0\n3,4\n')
    with pytest.raises(DataError, match=rf"^{path}:4: expected 3 fields \(as in the header\), found 2$"):
        load(path, target="y")


def test_text_in_a_numeric_column(tmp_path):
    path = write(tmp_path, "age,y\n30,a\n40,b\nabc,a\n50,b\n")
    with pytest.raises(DataError, match=f"^{path}:4: column 'age': expected a number, found 'abc'$"):
        load(path, target="y")


def test_number_among_text_values(tmp_path):
    path = write(tmp_path, "color,y\nred,a\n7,b\nblue,a\ngreen,b\n")
    with pytest.raises(DataError, match=f"^{path}:3: column 'color': found the number '7' among text values"):
        load(path, target="y")


def test_unknown_target_column_suggests_or_lists(tmp_path):
    path = write(tmp_path, "x,label\n1,a\n2,b\n")
    with pytest.raises(DataError, match=f"^{path}: target column 'lable' not found; did you mean 'label'\\?$"):
        load(path, target="lable")
    with pytest.raises(DataError, match=f"^{path}: target column 'zzz' not found; columns: x, label$"):
        load(path, target="zzz")


def test_unknown_feature_column(tmp_path):
    path = write(tmp_path, "income,label\n1,a\n2,b\n")
    with pytest.raises(DataError, match=f"^{path}: feature column 'incme' not found; did you mean 'income'\\?$"):
        load(path, target="label", features=["incme"])


def test_one_class_only(tmp_path):
    path = write(tmp_path, "x,y\n1,a\n2,a\n3,a\n")
    message = rf"^{path}: target column 'y' has only one class \('a'\); classification needs at least two$"
    with pytest.raises(DataError, match=message):
        load(path, target="y")


def test_empty_numeric_cell(tmp_path):
    path = write(tmp_path, "x,y\n1,a\n,b\n3,a\n")
    with pytest.raises(DataError, match=f"^{path}:3: column 'x': empty value; fill or drop missing values$"):
        load(path, target="y")


def test_too_few_rows_of_a_class_to_stratify(tmp_path):
    path = write(tmp_path, "x,y\n" + "".join(f"{i},{'a' if i < 19 else 'b'}\n" for i in range(20)))
    with pytest.raises(DataError, match=f"^{path}: class 'b' has only 1 row"):
        load(path, target="y")


def test_non_utf8_bytes_name_the_offset(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"name,y\ncaf\xe9,1\n")
    with pytest.raises(DataError, match=f"^{path}:2: not UTF-8 text \\(byte 0xe9 at byte offset 10\\)"):
        load(path, target="y")


def test_config_errors():
    with pytest.raises(ConfigError, match="^data.path: required for dataset 'csv'$"):
        TabularConfig(name="csv")
    with pytest.raises(ConfigError, match="^data.path: not used by the bundled dataset 'iris'"):
        TabularConfig(name="iris", path="x.csv")
    with pytest.raises(ConfigError, match="val_fraction \\+ test_fraction must be < 0.9"):
        TabularConfig(name="iris", val_fraction=0.45, test_fraction=0.45)


def test_csv_without_target_lists_the_columns(tmp_path):
    path = write(tmp_path, "a,b\n1,2\n")
    with pytest.raises(ConfigError, match=f"^data.target: required for dataset 'csv'; columns in {path}: a, b$"):
        load(path)


def test_prepare_inputs_errors(tmp_path):
    bundle = load(people_csv(tmp_path), target="label")
    missing = write(tmp_path, "age,colour\n30,red\n", "missing.csv")
    with pytest.raises(DataError, match=f"^{missing}: feature column 'income' not found"):
        prepare_inputs(bundle.preprocessing, missing)
    bad = write(tmp_path, "age,income,color\n30,50,red\n31,lots,red\n", "bad.csv")
    with pytest.raises(DataError, match=f"^{bad}:3: column 'income': expected a number, found 'lots'$"):
        prepare_inputs(bundle.preprocessing, bad)
    label = write(tmp_path, "age,income,color,label\n30,50,red,maybe\n", "label.csv")
    with pytest.raises(DataError, match=f"^{label}:2: column 'label': unknown label 'maybe'; expected one of no, yes"):
        prepare_inputs(bundle.preprocessing, label)


def test_unclosed_quote_names_the_line_it_opens_on(tmp_path):
    path = write(tmp_path, 'a,y\n1,x\n2,y\n"3,x\n4,y\n')
    with pytest.raises(DataError, match=f"^{path}:4: malformed CSV: a quote opened on this line is never closed$"):
        load(path, target="y")


def test_missing_value_markers_are_not_numbers(tmp_path):
    path = write(tmp_path, "a,y\n1,x\nNA,y\n3,x\n")
    with pytest.raises(
        DataError, match=rf"^{path}:3: column 'a': missing value \('NA'\); fill or drop missing values$"
    ):
        load(path, target="y")


@pytest.mark.parametrize("cell", ["1e200", "-4e38", "inf", "-Infinity"])
def test_a_value_beyond_float32_is_named_with_its_file_line_and_column(tmp_path, cell):
    # 1e200 is finite in float64 but inf in the float32 tensors: it made every gradient NaN (issue 13, defect 26)
    rows = "".join(f"{i},{cell if i == 3 else i},{'ab'[i % 2]}\n" for i in range(8))
    for target, task in (("y", "auto"), ("x", "regression")):
        path = write(tmp_path, "i,x,y\n" + rows)
        with pytest.raises(DataError) as err:
            load(path, target=target, task=task)
        assert str(err.value) == (f"{path}:5: column 'x': expected a finite number within float32's range "
                                  f"(±3.4e+38), found {cell!r}")
    bundle = load(people_csv(tmp_path), target="label")
    new = write(tmp_path, "age,income,color\n30,50,red\n31,1e39,red\n", "new.csv")
    with pytest.raises(DataError, match=f"^{new}:3: column 'income': expected a finite number"):
        prepare_inputs(bundle.preprocessing, new)


def test_a_parquet_value_beyond_float32_is_named_by_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0, 1e200, 4.0], "y": ["a", "b", "a", "b"]}), path)
    with pytest.raises(DataError, match=rf"^{path}: row 3: column 'x': expected a finite number within float32"):
        parquet_dataset(TabularConfig(name="parquet", path=str(path), target="y"))
