"""The learning-rate range test: which learning rate to train with (`dlforge lr-find`).

Smith, "Cyclical Learning Rates for Training Neural Networks" (2017), as fastai's `lr_find` and Lightning's
`Tuner.lr_find` run it: train for up to `steps` steps while the learning rate grows exponentially from `start` to
`end`, one step per rate; smooth the loss with a debiased exponential moving average; stop when it diverges (more
than `diverge` times the lowest smoothed loss, or not finite); suggest the rate where the smoothed loss falls fastest
against log(lr) (fastai's "steep", Lightning's suggestion), before its minimum.

Each step is the Trainer's own (`Trainer.train_step`: micro-batches, AMP, clipping, augmentation), on a Trainer of
its own, whose whole state (weights, optimizer, random states) is put back as it was afterwards: the test trains
nothing and saves nothing.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from dlforge.config import TrainConfig
from dlforge.errors import ConfigError
from dlforge.train.callbacks import Callback
from dlforge.train.trainer import Trainer

SMOOTHING = 0.98  # the moving average's beta, fastai's and Lightning's
DIVERGE = 4.0  # stop once the smoothed loss passes this multiple of its minimum (fastai, Lightning)
SKIP_START = 0.1  # the first 10% of the points are noise (the average is still warming up): no suggestion there


@dataclass
class LRFindResult:
    lrs: list[float] = field(default_factory=list)  # the rate of each step taken
    losses: list[float] = field(default_factory=list)  # its training loss
    smoothed: list[float] = field(default_factory=list)  # the debiased moving average of the losses
    suggestion: float | None = None  # the steepest descent of `smoothed`; None when it never went down
    min_loss_lr: float | None = None  # where `smoothed` is lowest
    diverged_at: float | None = None  # the rate at which the test stopped on divergence; None if it ran to `end`


class _RangeTest(Callback):
    """Sets each step's learning rate on the exponential ramp, records the losses, stops on divergence."""

    def __init__(self, start: float, end: float, steps: int, result: LRFindResult):
        self.start, self.end, self.steps, self.result = start, end, steps, result
        self.scales: list[float] = []
        self.average, self.best = 0.0, math.inf

    def lr(self, i: int) -> float:
        return self.start * (self.end / self.start) ** (i / (self.steps - 1))

    def set_lr(self, trainer, i: int) -> None:
        for group, scale in zip(trainer.optimizer.param_groups, self.scales, strict=True):
            group["lr"] = self.lr(i) * scale  # groups keep their ratios (a transfer's lower backbone rate)

    def on_fit_start(self, trainer) -> None:
        rates = [group["lr"] for group in trainer.optimizer.param_groups]
        self.scales = [rate / max(rates) for rate in rates]
        self.set_lr(trainer, 0)

    def on_step_end(self, trainer, logs: dict[str, float]) -> None:
        i, loss = len(self.result.lrs), logs["loss"]
        self.result.lrs.append(self.lr(i))
        self.result.losses.append(loss)
        if math.isfinite(loss):
            self.average = SMOOTHING * self.average + (1 - SMOOTHING) * loss
        smoothed = self.average / (1 - SMOOTHING ** (i + 1)) if math.isfinite(loss) else math.inf
        self.result.smoothed.append(smoothed)
        self.best = min(self.best, smoothed)
        if smoothed > DIVERGE * self.best:
            self.result.diverged_at = self.lr(i)
            trainer.should_stop, trainer.stop_reason = True, "diverged"
        elif i + 1 < self.steps:
            self.set_lr(trainer, i + 1)


def lr_range_test(model: torch.nn.Module, train_config: TrainConfig, train_data: Dataset, start: float = 1e-7,
                  end: float = 10.0, steps: int = 100, num_workers: int = 0,
                  batch_transform: torch.nn.Module | None = None) -> LRFindResult:
    """Run the range test on `model` with the optimizer, batch size, precision and clipping of `train_config` (its
    schedule, evaluation and checkpoints are not used). The model's weights and the RNG states are restored."""
    if not 0 < start < end:
        raise ConfigError(f"lr-find: expected 0 < start < end, got start {start:g} and end {end:g}")
    if steps < 2:
        raise ConfigError(f"lr-find: steps {steps}: expected at least 2")
    test_config = train_config.model_copy(update={
        "max_steps": steps, "max_epochs": None, "scheduler": "constant", "warmup_steps": 0, "log_every": 1,
        "eval_every": steps + 1, "checkpoint_every": None, "nan_policy": "skip", "progress": False,
        "tensorboard": False})  # a copy: the caller's config is untouched
    result = LRFindResult()
    trainer = Trainer(model, test_config, train_data, callbacks=[_RangeTest(start, end, steps, result)],
                      num_workers=num_workers, batch_transform=batch_transform)
    before = copy.deepcopy(trainer.state_dict())  # the weights and the RNG states, among the rest
    try:
        trainer.fit()
    finally:
        trainer.load_state_dict(before)
    _suggest(result)
    return result


def _suggest(result: LRFindResult) -> None:
    """The steepest descent of the smoothed loss against log(lr), among the points before its minimum (at the
    minimum itself the loss is about to turn: too high a rate to train with)."""
    finite = [i for i, s in enumerate(result.smoothed) if math.isfinite(s)]
    if not finite:
        return
    lowest = min(finite, key=lambda i: result.smoothed[i])
    result.min_loss_lr = result.lrs[lowest]
    first = int(SKIP_START * len(result.smoothed))
    if lowest - first < 2:  # no descent to speak of: the range starts too high, or is too short
        return
    slopes = np.gradient(result.smoothed[first:lowest + 1], np.log10(result.lrs[first:lowest + 1]))
    result.suggestion = result.lrs[first + int(np.argmin(slopes[:-1]))]  # below the minimum, where it still falls
