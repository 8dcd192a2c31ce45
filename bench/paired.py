"""What every benchmark here shares: a step clock for the Trainer, the median step interval, paired rounds.

Each benchmark runs dlforge and its baseline side by side in one process, interleaved, the order alternating each
round so that the machine's drift hits both alike, and reports the median ratio with its min and max.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from dlforge.train.callbacks import Callback


class StepClock(Callback):
    """Records the time of every optimizer step the Trainer takes."""

    def __init__(self):
        self.times: list[float] = []

    def on_step_end(self, trainer, logs) -> None:
        self.times.append(time.perf_counter())


def per_step(times: list[float]) -> float:
    """Median interval between consecutive optimizer steps: robust to the odd scheduler hiccup on a shared machine."""
    return statistics.median(b - a for a, b in zip(times[:-1], times[1:], strict=True))


def paired_rounds(ours: Callable[[int], float], baseline: Callable[[int], float], rounds: int
                  ) -> tuple[list[float], list[float]]:
    """Per-step times of `ours(round)` and `baseline(round)` over `rounds` rounds, alternating which goes first."""
    t_ours, t_base = [], []
    for r in range(rounds):
        if r % 2 == 0:
            a, b = ours(r), baseline(r)
        else:
            b, a = baseline(r), ours(r)
        t_ours.append(a)
        t_base.append(b)
    return t_ours, t_base


def summary(t_ours: list[float], t_base: list[float], batch_size: int) -> dict[str, float]:
    """Throughput ratio ours/baseline (samples/s, so above 1 is faster) per round: median, min, max."""
    ratios = [b / a for a, b in zip(t_ours, t_base, strict=True)]
    return {"samples_per_s_dlforge": batch_size / statistics.median(t_ours),
            "samples_per_s_baseline": batch_size / statistics.median(t_base),
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}


def hand_loop(step: Callable[[object], None], n: int, batch: int, steps: int) -> float:
    """Per-step time of a plain training loop: shuffle n rows each epoch, call `step(indices)` on full batches."""
    import torch

    times, done = [], 0
    while done < steps:
        perm = torch.randperm(n)
        for i in range(0, n - batch + 1, batch):
            step(perm[i:i + batch])
            times.append(time.perf_counter())
            done += 1
            if done == steps:
                break
    return per_step(times)
