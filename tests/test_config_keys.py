"""The config reference: `dlforge config keys SECTION [NAME]` and the generated docs/guides/config-reference.md."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from clitools import ok_json, one_line_error, run_here

from dlforge.config import Config, TrainConfig
from dlforge.config_keys import config_keys

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "docs" / "config_reference.py"


def test_the_reference_page_is_up_to_date():
    spec = importlib.util.spec_from_file_location("config_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        assert module.PAGE.read_text(encoding="utf-8") == module.render(), (
            "docs/guides/config-reference.md is out of date: run python scripts/docs/config_reference.py")
    finally:
        del sys.modules[spec.name]


def test_every_run_and_train_key_is_listed_with_a_description():
    rows = {r["key"]: r for r in config_keys("run") + config_keys("train")}
    assert {f"train.{k}" for k in TrainConfig.model_fields} <= set(rows)
    assert set(Config.model_fields) - {"data", "model", "train"} <= set(rows)
    assert {"train.early_stopping.patience", "train.lora.rank", "train.transfer.init_from"} <= set(rows)
    assert [k for k, r in rows.items() if not r["description"]] == []
    assert rows["train.lr"] | {"description": ""} == {"key": "train.lr", "type": "float", "default": 0.001,
                                                     "allowed": "> 0", "description": ""}
    assert rows["train.optimizer"]["allowed"] == "sgd, adam, adamw, adagrad, rmsprop"
    assert rows["train.transfer.init_from"]["default"] == "required"
    assert rows["train.max_steps"]["type"] == "int | null" and rows["train.betas"]["default"] == [0.9, 0.999]


def test_config_keys_command(capsys):
    rows = ok_json(run_here(capsys, "config", "keys", "model", "mlp", "--json"))
    hidden = next(r for r in rows if r["key"] == "model.hidden")
    assert hidden["type"] == "list[int]" and hidden["default"] == [64, 64]

    proc = run_here(capsys, "config", "keys", "model", "mlp")  # a table; "[64, 64]" is not read as markup
    assert proc.returncode == 0 and "list[int]" in proc.stdout and "[64, 64]" in proc.stdout
    data = ok_json(run_here(capsys, "config", "keys", "data", "csv", "--json"))
    assert {"data.path", "data.target", "data.limit"} <= {r["key"] for r in data}

    assert "give a name too" in one_line_error(run_here(capsys, "config", "keys", "data"))
    assert "unknown section" in one_line_error(run_here(capsys, "config", "keys", "optimizer"))
    assert "did you mean 'mlp'" in one_line_error(run_here(capsys, "config", "keys", "model", "mlpp"))
    shown = run_here(capsys, "config", "show", "iris-logistic")  # the preset form is unchanged
    assert shown.returncode == 0 and "train:" in shown.stdout
