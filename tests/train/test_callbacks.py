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


def test_a_nan_loss_with_the_progress_bar_on_is_reported_as_itself(tmp_path):
    done = run_cli("train", "breast-cancer-mlp", "train.lr=1e30", "train.optimizer=sgd", "train.max_epochs=3",
                   "train.scheduler=constant", "train.warmup_steps=0", "train.progress=true", f"runs_dir={tmp_path}",
                   cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "loss is nan" in done.stderr.lower() and "TypeError" not in done.stderr and "Traceback" not in done.stderr
