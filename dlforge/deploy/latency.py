"""Paired latency: two ways of running the same batch, timed in rounds that alternate which goes first (these
machines drift by 20-30% within minutes; pairing cancels most of it)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def paired_latency(first: tuple[str, Callable[[], Any]], second: tuple[str, Callable[[], Any]], batch: int,
                   rounds: int, calls: int) -> dict[str, Any]:
    """Median milliseconds per call of each (`NAME_ms`), after a warm call per round, and the speedup of the second
    over the first (first's time / second's) as median, min and max over the rounds."""
    (a, run_a), (b, run_b) = first, second
    times: dict[str, list[float]] = {a: [], b: []}
    for r in range(rounds):
        for name, run in ((a, run_a), (b, run_b)) if r % 2 == 0 else ((b, run_b), (a, run_a)):
            run()  # warm
            start = time.perf_counter()
            for _ in range(calls):
                run()
            times[name].append((time.perf_counter() - start) / calls)
    ratios = [x / y for x, y in zip(times[a], times[b], strict=True)]
    return {"batch": batch, **{f"{k}_ms": 1000 * statistics.median(v) for k, v in times.items()},
            "speedup_median": statistics.median(ratios), "speedup_min": min(ratios), "speedup_max": max(ratios),
            "rounds": rounds}
