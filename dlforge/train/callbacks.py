"""Callbacks: everything optional in training, on a short list of events.

Events (each gets the trainer first):
    on_fit_start(trainer)              before the first step (after a resume's state is loaded)
    on_step_end(trainer, logs)         after every optimizer step; `logs` is filled on log steps, else {}
    on_eval_start(trainer)             before each validation pass
    on_eval_end(trainer, metrics)      after each validation pass: {"val/loss": ..., "val/accuracy": ...}
    on_epoch_end(trainer)              after an epoch ran to its end (and its evaluation)
    on_fit_end(trainer)                after the loop ends normally (max steps, early stop or a signal)
    on_exception(trainer, exc)         when the loop raises

A callback's `state_dict()` goes into every checkpoint, so a resumed run continues with the same callback state.
Callbacks run on rank 0 only unless `rank_zero_only = False`. Order matters: loggers before the Checkpointer, so
that a checkpoint records the log file as it stands after the step.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from dlforge.errors import ConfigError
from dlforge.eval.metrics import lower_is_better
from dlforge.runs.progress import Progress
from dlforge.runs.rundir import reporting_full_disk, trim_metrics, write_metrics_csv


class Callback:
    rank_zero_only = True

    def on_fit_start(self, trainer) -> None: ...
    def on_step_end(self, trainer, logs: dict[str, float]) -> None: ...
    def on_eval_start(self, trainer) -> None: ...
    def on_eval_end(self, trainer, metrics: dict[str, float]) -> None: ...
    def on_epoch_end(self, trainer) -> None: ...
    def on_fit_end(self, trainer) -> None: ...
    def on_exception(self, trainer, exc: BaseException) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _better(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _mode(metric: str, mode: str) -> str:
    return mode if mode != "auto" else ("min" if lower_is_better(metric) else "max")


def _require(metric: str, metrics: dict[str, float], key: str) -> float:
    if metric not in metrics:
        raise ConfigError(f"{key}: {metric!r} is not an evaluated metric; expected one of {', '.join(sorted(metrics))}")
    return metrics[metric]


class MetricsLogger(Callback):
    """metrics.jsonl (one row per log step and per evaluation), metrics.csv, and TensorBoard events."""

    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.run_dir, self.tensorboard = Path(run_dir), tensorboard
        self.file = None
        self.writer = None
        self.step = 0  # the trainer's step when last told: a checkpoint's step

    def on_fit_start(self, trainer) -> None:
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in on_fit_end/on_exception
        if self.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn("TensorBoard logging is off: install it with pip install 'dlforge[tensorboard]'",
                              stacklevel=2)
                self.tensorboard = False
            else:  # purge_step drops events a crashed run wrote after its last checkpoint
                self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=trainer.step or None)

    def _write(self, row: dict[str, Any]) -> None:
        # strict JSON: a NaN or infinite value (an AUROC with one class present, a diverged loss) is written as null,
        # and `dlforge.runs.rundir.read_metrics` reads it back as NaN
        strict = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
        line = json.dumps(strict, allow_nan=False) + "\n"
        with reporting_full_disk(self.path, len(line)):
            self.file.write(line)
            self.file.flush()
        if self.writer is not None:
            for k, v in row.items():
                if k not in ("step", "epoch", "split") and isinstance(v, int | float):
                    self.writer.add_scalar(k if "/" in k else f"train/{k}", v, row["step"])

    def on_step_end(self, trainer, logs: dict[str, float]) -> None:
        self.step = trainer.step
        if logs:
            self._write(logs)

    def on_eval_end(self, trainer, metrics: dict[str, float]) -> None:
        self.step = trainer.step
        self._write({"step": trainer.step, "epoch": trainer.epoch_progress, "split": "val", **metrics})

    def _close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def on_fit_end(self, trainer) -> None:
        self._close()
        write_metrics_csv(self.path, self.run_dir / "metrics.csv")

    def on_exception(self, trainer, exc: BaseException) -> None:
        self._close()

    def state_dict(self) -> dict[str, Any]:
        if self.file is not None:  # a checkpoint is taken: the log must last as far as the checkpoint says it does
            self.file.flush()
            os.fsync(self.file.fileno())
        return {"bytes": self.path.stat().st_size if self.path.exists() else 0, "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Rows written after the checkpoint are written again by the resumed run: cut them off (and a log cut
        # shorter than the checkpoint says keeps its valid rows).
        self.step = state.get("step", 0)
        trim_metrics(self.path, state["bytes"], state.get("step"))


class ProgressBar(Callback):
    """Training progress on stderr (`dlforge.runs.progress.Progress`): a bar on a terminal, otherwise (logs, CI,
    nohup) a plain line every `every_s` seconds with the step, the rate, the ETA and the loss; and a line per
    evaluation either way."""

    def __init__(self, every_s: float = 30.0):
        self.every_s = every_s
        self.progress: Progress | None = None

    def on_fit_start(self, trainer) -> None:
        self.progress = Progress("train", trainer.max_steps, done=trainer.step, every_s=self.every_s)

    def on_step_end(self, trainer, logs: dict[str, float]) -> None:
        if self.progress is not None:
            self.progress.update(trainer.step, f"loss {logs['loss']:.4f}" if logs else "")

    def on_eval_end(self, trainer, metrics: dict[str, float]) -> None:
        text = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        line = f"epoch {trainer.epoch_progress:>6.2f}  step {trainer.step:>6}  {text}"
        if self.progress is not None:
            self.progress.note(line)
        else:  # an evaluation outside fit()
            print(line, file=sys.stderr, flush=True)

    def on_fit_end(self, trainer) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress = None

    def on_exception(self, trainer, exc: BaseException) -> None:
        self.on_fit_end(trainer)  # the bar goes away; the error is reported by whoever catches it


class Checkpointer(Callback):
    """Periodic checkpoints (plus one on SIGTERM/SIGINT and at the end), and the best model by `monitor`."""

    def __init__(self, directory: Path, every: int | str | None, keep: int, monitor: str | None, mode: str = "auto"):
        self.dir = Path(directory)
        self.every, self.keep, self.monitor = every, keep, monitor  # monitor None: no best tracking
        self.mode = _mode(monitor, mode) if monitor else "min"
        self.best: float | None = None
        self.best_step: int | None = None
        self.last_saved = -1

    def save(self, trainer) -> Path:
        from dlforge.train.checkpoint import prune_checkpoints, save_checkpoint

        path = save_checkpoint(self.dir / f"checkpoint-{trainer.step}", trainer.state_dict())
        self.last_saved = trainer.step
        prune_checkpoints(self.dir, self.keep)
        return path

    def on_step_end(self, trainer, logs: dict[str, float]) -> None:
        if trainer.interrupted or (isinstance(self.every, int) and trainer.step % self.every == 0):
            self.save(trainer)

    def on_epoch_end(self, trainer) -> None:
        if self.every == "epoch":
            self.save(trainer)

    def on_eval_end(self, trainer, metrics: dict[str, float]) -> None:
        if self.monitor is None:
            return
        value = _require(self.monitor, metrics, "train.monitor")
        if _better(value, self.best, self.mode):
            from dlforge.artifacts import save_model

            self.best, self.best_step = value, trainer.step
            save_model(trainer.model, self.dir / "best", extra_files={"best.json": {
                "step": trainer.step, "epoch": trainer.epoch, "metric": self.monitor, "value": value}})

    def on_fit_end(self, trainer) -> None:
        if self.every is not None and self.last_saved != trainer.step:
            self.save(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "last_saved": self.last_saved}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_step, self.last_saved = state["best"], state["best_step"], state["last_saved"]


class EMA(Callback):
    """An exponential moving average of the model's floating-point weights and buffers, updated after every step:
    avg = d * avg + (1 - d) * w, with d = min(decay, (1 + n) / (10 + n)) at update n under `warmup`. Validation
    and the best checkpoint see the average (it is swapped in at on_eval_start and out at on_eval_end, so it must
    come after the Checkpointer); at the end of training the model keeps the average. Every rank keeps its own
    (the weights are the same on all), and the average is in each checkpoint, so a resume continues it exactly."""

    rank_zero_only = False

    def __init__(self, decay: float = 0.999, warmup: bool = True):
        self.decay, self.warmup = decay, warmup
        self.average: dict[str, torch.Tensor] | None = None
        self.updates = 0  # the trainer step whose weights were folded in last
        self._raw: dict[str, torch.Tensor] | None = None

    def _tracked(self, model) -> dict[str, torch.Tensor]:
        return {k: v for k, v in model.state_dict().items() if v.is_floating_point()}

    def on_fit_start(self, trainer) -> None:
        if self.average is None:
            self.average = {k: v.detach().clone() for k, v in self._tracked(trainer.model).items()}

    @torch.no_grad()
    def _update(self, trainer) -> None:
        """Fold in the weights of this step, once (a step's evaluation comes before its on_step_end)."""
        if self.updates == trainer.step:
            return
        self.updates = trainer.step
        n = self.updates
        d = min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay
        for key, value in self._tracked(trainer.model).items():
            self.average[key].lerp_(value, 1 - d)

    def on_step_end(self, trainer, logs: dict[str, float]) -> None:
        self._update(trainer)

    def on_eval_start(self, trainer) -> None:
        self._update(trainer)
        self._raw = {k: v.detach().clone() for k, v in self._tracked(trainer.model).items()}
        trainer.model.load_state_dict(self.average, strict=False)

    def on_eval_end(self, trainer, metrics: dict[str, float]) -> None:
        if self._raw is not None:
            trainer.model.load_state_dict(self._raw, strict=False)
            self._raw = None

    def on_fit_end(self, trainer) -> None:
        trainer.model.load_state_dict(self.average, strict=False)

    def state_dict(self) -> dict[str, Any]:
        return {"average": self.average, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.average, self.updates = state["average"], state["updates"]


class EarlyStopping(Callback):
    """Stop when `metric` has not improved by `min_delta` for `patience` evaluations."""

    def __init__(self, metric: str, mode: str = "auto", patience: int = 10, min_delta: float = 0.0):
        self.metric, self.patience, self.min_delta = metric, patience, min_delta
        self.mode = _mode(metric, mode)
        self.best: float | None = None
        self.wait = 0

    def on_eval_end(self, trainer, metrics: dict[str, float]) -> None:
        value = _require(self.metric, metrics, "train.early_stopping.metric")
        if _better(value, self.best, self.mode, self.min_delta):
            self.best, self.wait = value, 0
        else:
            self.wait += 1
            if self.wait >= self.patience:
                trainer.should_stop = True
                trainer.stop_reason = f"early_stopping: {self.metric} did not improve for {self.patience} evaluations"

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait = state["best"], state["wait"]


class FlopsUtilization(Callback):
    """Adds `mfu` to the training logs: tokens/s times the model's FLOPs per token, over the matmul peak measured at
    the start on the training device in the training precision (times the number of processes). Goes before the
    loggers, which then write it."""

    def __init__(self, flops_per_token: float):
        self.flops_per_token = flops_per_token
        self.peak: float | None = None

    def on_fit_start(self, trainer) -> None:
        import torch

        from dlforge.eval.mfu import matmul_peak

        dtype = trainer.autocast_dtype or torch.float32
        self.peak = matmul_peak(trainer.device, dtype) * trainer.dist.world_size

    def on_step_end(self, trainer, logs: dict[str, float]) -> None:
        if logs and "tokens_per_s" in logs and self.peak:
            from dlforge.eval.mfu import mfu

            logs["mfu"] = mfu(self.flops_per_token, logs["tokens_per_s"], self.peak)


class Plots(Callback):
    """Loss, metric and learning-rate curves as PNG in <run>/plots at the end of training."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    def on_fit_end(self, trainer) -> None:
        from dlforge.runs.plots import plot_run

        plot_run(self.run_dir)
