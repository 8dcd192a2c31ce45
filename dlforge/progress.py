"""Progress of long work, shown to people on stderr: a bar on a terminal, a plain line now and then otherwise.

    with Progress("rag index", total=len(files), unit="files") as progress:
        for path in files:
            ...
            progress.advance()           # one more done (or advance(n))

On a terminal (stderr is a tty) a rich bar (done/total, rate, time left) that goes away when the work ends. Anywhere
else (a log file, CI, nohup, a pipe) one plain line at most every `every` seconds while the work runs,

    rag index: 120/500 files (24%), 4.1 files/s, about 1 min 33 s left

and one when it ends (`rag index: 500/500 files in 2 min 02 s, 4.1 files/s`), so a log shows that long work is
alive and how long it took. Nothing is printed when the work fails (the error says what happened) or when there was
nothing to do. `total` may be None when it is not known (no percentage or time left then).

The module imports nothing of dlforge, so every floor (rag, eval, train, llm) can share it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

EVERY = 10.0  # seconds between plain lines


def format_duration(seconds: float) -> str:
    """4.2 s, 3 min 07 s, 1 h 02 min 09 s."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"


def _rate(per_second: float) -> str:
    """1790, 50.4, 4.1, 0.07: three significant digits, never an exponent."""
    return f"{per_second:.0f}" if per_second >= 100 else f"{per_second:.3g}"


class Progress:
    """Counts work done and shows it (see the module docstring). `stream`: where to show it (default sys.stderr);
    `clock`: where time comes from (time.monotonic)."""

    def __init__(self, label: str, total: int | None = None, unit: str = "items", every: float = EVERY,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic):
        self.label, self.total, self.unit, self.every = label, total, unit, every
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.done = 0
        self.start = self.last_line = clock()
        self._bar: Any = None
        self._task: Any = None
        if self.stream.isatty():
            self._start_bar()

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn(self.unit), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=Console(file=self.stream), transient=True)
        self._task = self._bar.add_task(self.label, total=self.total)
        self._bar.start()

    def advance(self, n: int = 1) -> None:
        """`n` more items done."""
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
            return
        now = self.clock()
        if now - self.last_line >= self.every:
            self.last_line = now
            self._print(self.status(now))

    def status(self, now: float | None = None) -> str:
        """The plain line for the work so far: done/total, share, rate, time left."""
        elapsed = (self.clock() if now is None else now) - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        line = f"{self.label}: {self.done}" + (f"/{self.total}" if self.total is not None else "") + f" {self.unit}"
        if self.total:
            line += f" ({100 * self.done / self.total:.0f}%)"
        line += f", {_rate(rate)} {self.unit}/s"
        if self.total is not None and rate > 0 and self.done < self.total:
            line += f", about {format_duration((self.total - self.done) / rate)} left"
        return line

    def close(self, failed: bool = False) -> None:
        """The end of the work: the bar goes away, or the closing plain line is printed (not when it `failed`)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
            return
        if not failed and (self.done or self.total):  # nothing to do: nothing to say
            elapsed = self.clock() - self.start
            total = f"/{self.total}" if self.total is not None else ""
            rate = f", {_rate(self.done / elapsed)} {self.unit}/s" if elapsed > 0 else ""
            self._print(f"{self.label}: {self.done}{total} {self.unit} in {format_duration(elapsed)}{rate}")

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close(failed=exc_type is not None)
