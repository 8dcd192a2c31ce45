"""Dynamic batching: requests for one model that arrive together run as one forward pass.

    batcher = Batcher(lambda texts: embedder.embed(texts), pool, max_items=64, wait_s=0.005)
    vectors = await batcher.submit(["a text", "another"])      # this request's rows of the batch

A request's items wait at most `wait_s` for others (or until `max_items` are waiting), then run together on the
model pool; while a batch runs, new requests gather for the next one, so the batches grow with the load and a lone
request waits `wait_s` at most. `fn` takes a list of items and returns one result per item, in order; a failure
fails every request of that batch with the same error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any


class Batcher:
    def __init__(self, fn: Callable[[list[Any]], Sequence[Any]], executor: Executor, max_items: int = 64,
                 wait_s: float = 0.005, on_batch: Callable[[int], None] | None = None):
        self.fn, self.executor, self.max_items, self.wait_s, self.on_batch = fn, executor, max_items, wait_s, on_batch
        self.pending: list[tuple[list[Any], asyncio.Future]] = []
        self.running = False
        self.timer: asyncio.TimerHandle | None = None

    async def submit(self, items: list[Any]) -> list[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self.pending.append((list(items), future))
        if not self.running:
            if sum(len(i) for i, _ in self.pending) >= self.max_items:
                self._start()
            elif self.timer is None:
                self.timer = loop.call_later(self.wait_s, self._start)
        return await future

    def _start(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.running or not self.pending:
            return
        taken, size = [], 0
        while self.pending and (not taken or size + len(self.pending[0][0]) <= self.max_items):
            taken.append(self.pending.pop(0))
            size += len(taken[-1][0])
        self.running = True
        asyncio.get_running_loop().create_task(self._run(taken))

    async def _run(self, taken: list[tuple[list[Any], asyncio.Future]]) -> None:
        items = [x for group, _ in taken for x in group]
        try:
            results = await asyncio.get_running_loop().run_in_executor(self.executor, self.fn, items)
            if self.on_batch is not None:
                self.on_batch(len(items))
            start = 0
            for group, future in taken:
                if not future.done():
                    future.set_result(list(results[start:start + len(group)]))
                start += len(group)
        except Exception as exc:  # noqa: BLE001 - every request of the batch gets the error
            for _, future in taken:
                if not future.done():
                    future.set_exception(exc)
        finally:
            self.running = False
            if self.pending:  # those who came while this batch ran: at once, they have waited already
                self._start()
