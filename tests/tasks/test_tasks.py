"""Tasks as plug-ins: each registered task builds its metrics, and a run's model folder records the input/output
signature its task reads off the model (what export and serving use)."""

from __future__ import annotations

import json

import pytest

from dlforge import api
from dlforge.errors import ConfigError
from dlforge.eval.metrics import TaskMetrics
from dlforge.registry import create_task, list_tasks


def test_every_builtin_task_is_registered_and_names_itself():
    builtin = {"classification", "regression", "forecast", "language_modeling", "masked_lm", "translation"}
    assert builtin <= set(list_tasks())
    for name in list_tasks():
        assert create_task(name).name == name


def test_an_unknown_task_is_a_config_error_with_a_suggestion():
    with pytest.raises(ConfigError, match="task: unknown task 'clasification'; did you mean 'classification'"):
        create_task("clasification")


def test_task_metrics_by_name_and_from_info_are_the_tasks_metric_sets():
    by_name = TaskMetrics("regression", target_mean=1.0, target_std=3.0)
    from_info = TaskMetrics.from_info({"task": "regression", "target_mean": 1.0, "target_std": 3.0})
    assert type(by_name) is type(from_info) and isinstance(by_name, TaskMetrics)
    assert (by_name.task, by_name.target_mean, by_name.target_std) == ("regression", 1.0, 3.0)


def test_a_tabular_run_records_its_signature(tmp_path):
    result = api.train("breast-cancer-mlp", ["train.max_epochs=1", "train.warmup_steps=0", "train.progress=false",
                                             f"runs_dir={tmp_path}"])
    signature = json.loads((result.run_dir / "model" / "signature.json").read_text())
    assert signature == {"task": "classification",
                         "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 30]}],
                         "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, 2]}]}


def test_a_language_model_run_records_a_varying_length(tiny_lm_run):
    signature = json.loads((tiny_lm_run.run / "model" / "signature.json").read_text())
    vocab = json.loads((tiny_lm_run.run / "model" / "config.json").read_text())["config"]["vocab_size"]
    assert signature["task"] == "language_modeling"
    assert signature["inputs"] == [{"name": "input_ids", "dtype": "int64", "shape": [-1, -1]}]
    assert signature["outputs"] == [{"name": "logits", "dtype": "float32", "shape": [-1, -1, vocab]}]
