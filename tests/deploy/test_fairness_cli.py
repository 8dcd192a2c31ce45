"""`dlforge fairness` end to end on a small trained run: the run's own test split rebuilt with a column that was not
a feature, figures equal to Fairlearn's on the predictions `dlforge predict` makes, fairness.json and the model card,
and errors in one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import fairlearn.metrics as fairlearn_metrics
import numpy as np
import pytest
from clitools import one_line_error, run_here
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split

TEST_FRACTION, SEED = 0.25, 5


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, list[dict[str, str]]]:
    """A run trained on people.csv: features x1, x2; target y; groups sex and site, which are not features."""
    from dlforge.api import train

    d = tmp_path_factory.mktemp("fairness")
    rng = np.random.default_rng(0)
    n = 400
    sex, site = rng.choice(["f", "m"], n), rng.choice(["north", "south", "west"], n, p=[0.5, 0.4, 0.1])
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    y = (x1 + 0.5 * x2 + 0.7 * (sex == "f") + rng.normal(scale=0.8, size=n) > 0.3).astype(int)
    rows = [{"x1": f"{a:.4f}", "x2": f"{b:.4f}", "sex": s, "site": t, "y": str(v)}
            for a, b, s, t, v in zip(x1, x2, sex, site, y, strict=True)]
    write_csv(d / "people.csv", rows)
    config = {"name": "people", "data": {"name": "csv", "path": str(d / "people.csv"), "target": "y",
                                         "features": ["x1", "x2"], "val_fraction": 0.1,
                                         "test_fraction": TEST_FRACTION, "split_seed": SEED},
              "model": {"name": "mlp", "hidden": [8]},
              "train": {"max_steps": 40, "batch_size": 32, "lr": 0.02, "progress": False, "tensorboard": False,
                        "checkpoint_every": None, "max_epochs": None}}
    return train(config, run_dir=d / "runs" / "people").run_dir, rows


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_the_test_split_audit_equals_fairlearn_on_the_runs_predictions(run, capsys, tmp_path):
    from dlforge.api import predict

    folder, rows = run
    proc = run_here(capsys, "fairness", str(folder), "--data", "test", "--sensitive", "sex,site", "--bootstrap", "20",
                    "--json")
    assert proc.returncode == 0, proc.stderr
    audit = json.loads(proc.stdout)
    # the test rows, drawn here as the tabular split draws them (stratified, test first), and their predictions
    labels = [r["y"] for r in rows]
    _, test = train_test_split(np.arange(len(rows)), test_size=TEST_FRACTION, random_state=SEED, stratify=labels)
    test_rows = [rows[i] for i in test]
    write_csv(tmp_path / "test.csv", test_rows)
    pred = np.array([int(p["prediction"]) for p in predict(str(folder), tmp_path / "test.csv")])
    y = np.array([int(r["y"]) for r in test_rows])
    assert audit["n"] == len(test) == 100 and audit["classes"] == ["1"]
    assert [a["columns"] for a in audit["analyses"]] == [["sex"], ["site"], ["sex", "site"]]
    sex = np.array([r["sex"] for r in test_rows])
    frame = fairlearn_metrics.MetricFrame(
        metrics={"accuracy": accuracy_score, "selection_rate": fairlearn_metrics.selection_rate,
                 "tpr": fairlearn_metrics.true_positive_rate, "fpr": fairlearn_metrics.false_positive_rate},
        y_true=y, y_pred=pred, sensitive_features=sex)
    for group in audit["analyses"][0]["groups"]:
        key = group["group"]["sex"]
        assert abs(group["accuracy"]["value"] - frame.by_group.loc[key, "accuracy"]) < 1e-9
        for metric in ("selection_rate", "tpr", "fpr"):
            assert abs(group["classes"]["1"][metric]["value"] - frame.by_group.loc[key, metric]) < 1e-9
        lo, hi = group["accuracy"]["ci"]
        assert lo <= group["accuracy"]["value"] <= hi
    gaps = audit["analyses"][0]["disparities"]["1"]
    assert abs(gaps["equalized_odds_difference"]["value"]
               - fairlearn_metrics.equalized_odds_difference(y, pred, sensitive_features=sex)) < 1e-9
    assert "site=west" in audit["analyses"][1]["flagged"]  # about 10 of 100 rows, under --min-group 30

    saved = json.loads((folder / "fairness.json").read_text())
    assert saved == {k: v for k, v in audit.items() if k != "card"}
    card = (folder / "README.md").read_text()
    assert card.count("## Quantitative analyses") == 1 and "### By sex x site" in card
    assert "No fairness audit was done" not in card

    # the same rows from a file give the same figures; the second audit replaces the first in the card
    proc = run_here(capsys, "fairness", str(folder), "--data", str(tmp_path / "test.csv"), "--sensitive", "sex,site",
                    "--bootstrap", "20", "--json")
    again = json.loads(proc.stdout)
    assert again["analyses"] == audit["analyses"] and again["data"] == f"`{tmp_path / 'test.csv'}`"
    card = (folder / "README.md").read_text()
    assert card.count("## Quantitative analyses") == 1 and card.count("### By sex x site") == 1
    assert f"on `{tmp_path / 'test.csv'}`" in card


def test_the_table_for_people(run, capsys):
    folder, _ = run
    proc = run_here(capsys, "fairness", str(folder), "--data", "val", "--sensitive", "sex", "--bootstrap", "0")
    assert proc.returncode == 0, proc.stderr
    assert "performance by sex, class 1" in proc.stdout and "calibration by sex, class 1" in proc.stdout
    assert "demographic parity difference:" in proc.stdout
    assert json.loads((folder / "fairness.json").read_text())["data"].startswith("the val split of `csv`")


def test_errors_name_the_column_or_file_in_one_line(run, capsys, tmp_path):
    folder, rows = run
    proc = run_here(capsys, "fairness", str(folder), "--data", "test", "--sensitive", "sexx")
    assert proc.returncode == 2 and "sensitive column 'sexx' not found; did you mean 'sex'?" in one_line_error(proc)
    write_csv(tmp_path / "no_target.csv", [{k: v for k, v in r.items() if k != "y"} for r in rows[:10]])
    proc = run_here(capsys, "fairness", str(folder), "--data", str(tmp_path / "no_target.csv"), "--sensitive", "sex")
    assert proc.returncode == 2 and "no target column 'y'" in one_line_error(proc)
    proc = run_here(capsys, "fairness", str(folder), "--data", "test", "--sensitive", "sex,sex")
    assert proc.returncode == 2 and "--sensitive: 'sex,sex'" in one_line_error(proc)
