"""`dlforge fairness`: how a trained tabular classifier does per group of people (dlforge.eval.fairness), written
to `RUN/fairness.json` and to the run's model card.

    audit = fairness("runs/randhie-mlp-...", "test", ["female", "black"])

The rows are a CSV/Parquet file holding the model's feature columns, the target and the sensitive columns, or the
run's own val or test split: rebuilt from its saved config (the tabular split is seeded, `data.split_seed`) over
the raw table, so that a sensitive column the model was not given as a feature is still there.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlforge.artifacts import load_trained
from dlforge.data.table_reader import Table, as_text, is_missing, read_table
from dlforge.errors import DataError, warn
from dlforge.eval.fairness import fairness_report
from dlforge.layers.losses import to_probabilities
from dlforge.runs.card import write_fairness_sections
from dlforge.runs.rundir import atomic_write_json, resolve_run
from dlforge.safe_yaml import read_yaml

SPLITS = ("val", "test")
MISSING = "(missing)"  # the group of rows with no value in a sensitive column: shown, not dropped
BATCH = 4096


def fairness(run: str | Path, data: str, sensitive: list[str], *, min_group: int = 30, n_boot: int = 1000,
             seed: int = 0) -> dict[str, Any]:
    """Audit a trained tabular classifier on `data` ("val", "test", or a CSV/Parquet file) by the `sensitive`
    columns: the per-group metrics, disparities and bootstrap intervals of `fairness_report`, with `run`, `data`
    (in words) and `when` added. Writes RUN/fairness.json and the card's sections
    (both atomically; a second audit replaces the first) and returns the audit, with `card`: the card's path."""
    run_path = resolve_run(str(run))
    if not sensitive:
        raise DataError("--sensitive: give at least one column, e.g. --sensitive female,black")
    model = load_trained(run_path)
    pre = model.meta["extra"].get("preprocessing.json") or {}
    if pre.get("kind") != "tabular" or pre.get("task") != "classification":
        what = f"a {pre.get('kind', 'non-tabular')} {pre.get('task', '')}".rstrip()
        raise DataError(f"{run_path}: {what} model; dlforge fairness audits tabular classifiers")
    table, described = _rows(run_path, model.meta["extra"].get("data_info.json") or {}, data)
    for column in sensitive:
        table.require(column, "sensitive")
    if pre["target"] not in table.columns:
        raise DataError(f"{table.source}: no target column {pre['target']!r}; the audit compares predictions "
                        "with the true labels")
    from dlforge.data.tabular import encode_table

    x, y, _ = encode_table(pre, table)
    proba = _probabilities(model, x)
    groups = {c: [MISSING if is_missing(v) else as_text(v) for v in table.columns[c]] for c in sensitive}
    report = fairness_report(y.numpy(), proba, groups, pre["label_names"], min_group=min_group, n_boot=n_boot,
                             seed=seed)
    audit = {"run": str(run_path), "data": described, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
             **report}
    atomic_write_json(run_path / "fairness.json", audit)
    card = write_fairness_sections(run_path, audit)
    if card is None:
        warn(f"{run_path}: no model card (README.md) to add the audit to; it is in fairness.json")
    return {**audit, "card": None if card is None else str(card)}


def _rows(run_path: Path, info: dict[str, Any], data: str) -> tuple[Table, str]:
    """The rows to audit and what they are, in words."""
    if data not in SPLITS:
        from dlforge.paths import existing_file

        path = existing_file(data, "--data (a CSV or Parquet file, or val or test)")
        table = read_table(path)
        return table, f"`{path}`"
    from dlforge.data.tabular import TabularConfig, split_rows

    config = read_yaml(run_path / "config.yaml")
    section = config.get("data") or {}
    table, splits = split_rows(TabularConfig.model_validate(section))
    rows = splits[data]
    if section.get("limit") is not None:
        rows = rows[: section["limit"]]  # as build_data cut each split
    trained = info.get(f"n_{data}")
    if trained is not None and trained != len(splits[data]):
        raise DataError(f"{run_path}: the {data} split rebuilt from config.yaml has {len(splits[data]):,} rows, "
                        f"the run's had {trained:,}; the data ({table.source}) changed since training")
    if not len(rows):
        raise DataError(f"{run_path}: the run has no {data} split (data.{data}_fraction 0); give a file")
    seed = section.get("split_seed")
    return table.take(rows), f"the {data} split of `{section.get('name')}` (data.split_seed {seed})"


@torch.no_grad()
def _probabilities(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """Class probabilities (N, C) of the model on x (N, F), a batch at a time."""
    loss = getattr(model.config, "loss", "cross_entropy")
    parts = [to_probabilities(model({"x": x[i:i + BATCH]}).logits, loss) for i in range(0, len(x), BATCH)]
    return torch.cat(parts).double().numpy()
