"""Admission: work that runs a model is let in `running` at a time with `waiting` more queued, and beyond that
refused at once with 429 and Retry-After, so that a burst is answered quickly rather than served slowly. Batched work
(embeddings, v2 rows, generations sampled alike) counts against the same capacity without a slot of its own: its
batches run on the model pool, one at a time per model."""

from __future__ import annotations

import asyncio
from typing import Any

from dlforge.deploy.serve import openai_api as oa
from dlforge.deploy.serve.metrics import Metrics


class Busy(Exception):
    pass


class Admission:
    """`running` requests at once, `waiting` more in line; `enter` raises Busy beyond that."""

    def __init__(self, running: int, waiting: int, metrics: Metrics):
        self.max_running, self.max_waiting, self.metrics = running, waiting, metrics
        self.running = self.waiting = 0
        self._slots = asyncio.Semaphore(running)

    async def enter(self) -> None:
        if self.running + self.waiting >= self.max_running + self.max_waiting:
            raise Busy
        self.waiting += 1
        self.metrics.waiting.set(self.waiting)
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
            self.metrics.waiting.set(self.waiting)
        self.running += 1
        self.metrics.running.set(self.running)

    def leave(self) -> None:
        self.running -= 1
        self.metrics.running.set(self.running)
        self._slots.release()

    def enter_batched(self) -> None:
        """Admit a request that a `Batcher` runs with others: it counts against the same capacity, but takes no
        slot of its own (its batch runs on the model pool, one batch at a time per model)."""
        if self.running + self.waiting >= self.max_running + self.max_waiting:
            raise Busy
        self.running += 1
        self.metrics.running.set(self.running)

    def leave_batched(self) -> None:
        self.running -= 1
        self.metrics.running.set(self.running)


async def enter(gate: Admission, options: Any) -> None:
    try:
        await gate.enter()
    except Busy:
        raise busy(gate, options) from None


def busy(gate: Admission, options: Any) -> oa.ApiError:
    return oa.ApiError(429, f"the server is busy ({gate.max_running} requests running, {gate.max_waiting} waiting); "
                            f"retry after {options.retry_after_s} s", None, "rate_limit_exceeded",
                       kind="rate_limit_error", headers={"Retry-After": str(options.retry_after_s)})
