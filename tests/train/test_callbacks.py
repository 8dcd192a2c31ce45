"""Every built-in callback takes every event the Trainer emits, with the Trainer's arguments: an error inside the loop
reaches the user as itself, never as a callback's TypeError (issue 13, defect 1)."""

from __future__ import annotations

import inspect

import pytest
from clitools import run_cli

from dlforge.train import callbacks
from dlforge.train.callbacks import Callback

EVENTS = [name for name, fn in vars(Callback).items() if name.startswith("on_") and callable(fn)]
BUILTIN = [cls for cls in vars(callbacks).values()
           if isinstance(cls, type) and issubclass(cls, Callback) and cls is not Callback]


def test_the_events_and_callbacks_are_found():
    assert {"on_fit_start", "on_step_end", "on_eval_end", "on_epoch_end", "on_fit_end", "on_exception"} <= set(EVENTS)
    assert {"MetricsLogger", "ProgressBar", "Checkpointer", "EarlyStopping", "FlopsUtilization", "Plots"} <= \
        {cls.__name__ for cls in BUILTIN}


@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("cls", BUILTIN, ids=lambda cls: cls.__name__)
def test_every_builtin_callback_takes_every_event_with_the_trainers_arguments(cls, event):
    expected = inspect.signature(getattr(Callback, event))
    args = [object() for _ in list(expected.parameters)[1:]]  # the trainer, then the event's own arguments
    inspect.signature(getattr(cls, event)).bind(cls.__new__(cls), *args)  # raises TypeError when they don't fit


def test_a_nonfinite_loss_with_the_progress_bar_on_is_reported_as_itself(tmp_path):
    # lr 1e8 makes the loss overflow within a few steps (lr 1e30 overflows the weights themselves at step 2, which
    # stops the run before any loss is: issue 13, defect 11)
    done = run_cli("train", "breast-cancer-mlp", "train.lr=1e8", "train.optimizer=sgd", "train.max_epochs=3",
                   "train.scheduler=constant", "train.warmup_steps=0", "train.progress=true", f"runs_dir={tmp_path}",
                   cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "loss is inf at step" in done.stderr and "TypeError" not in done.stderr and "Traceback" not in done.stderr


def test_metrics_jsonl_is_strict_json_and_reads_back_nan(tmp_path):
    """A NaN or infinite metric is written as null (bare NaN is not JSON) and read back as NaN (issue 13, defect 16)."""
    import json
    import math
    from types import SimpleNamespace

    from dlforge.runs.rundir import read_metrics
    from dlforge.train.callbacks import MetricsLogger

    logger = MetricsLogger(tmp_path, tensorboard=False)
    trainer = SimpleNamespace(step=3, epoch_progress=1.5)
    logger.on_fit_start(trainer)
    logger.on_step_end(trainer, {"step": 3, "loss": float("inf"), "lr": 0.1})
    logger.on_eval_end(trainer, {"val/auroc": float("nan"), "val/accuracy": 0.5})
    logger.on_fit_end(trainer)

    def refuse(constant: str) -> float:
        raise ValueError(f"not JSON: {constant}")

    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line, parse_constant=refuse) for line in lines]
    assert rows[0]["loss"] is None and rows[1]["val/auroc"] is None and rows[1]["val/accuracy"] == 0.5
    back = read_metrics(tmp_path / "metrics.jsonl")
    assert math.isnan(back[0]["loss"]) and math.isnan(back[1]["val/auroc"]) and back[0]["lr"] == 0.1
