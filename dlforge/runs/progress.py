"""Progress of long work, on stderr: a rich bar on a terminal, and elsewhere (logs, CI, nohup) a plain line every
`every_s` seconds, so that work of minutes is never silent.

    with Progress("index", total=len(files), unit="files") as progress:
        for i, path in enumerate(files, start=1):
            ...
            progress.update(i)

A plain line reads `index: 120/400 files (30%), 4.1 files/s, ETA 1 min 08 s`, plus the latest `info` given to
`update` (`loss 0.4321`). `note(line)` prints a line of its own (an evaluation), above the bar on a terminal.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def format_duration(seconds: float) -> str:
    """42.0 -> '42.0 s', 128 -> '2 min 08 s', 7500 -> '2 h 05 min 00 s'."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"


class Progress:
    """`done` of `total` units of work (total None when unknown), shown on `stream` (stderr by default)."""

    def __init__(self, label: str, total: int | None, done: int = 0, unit: str = "steps", every_s: float = 30.0,
                 stream: TextIO | None = None):
        self.label, self.total, self.unit, self.every_s = label, total, unit, every_s
        self.stream = stream if stream is not None else sys.stderr
        self.done = self.first = done  # the rate counts the work done here, not what a resumed run had done before
        self.info = ""
        self.started = self.last_line = time.monotonic()
        self.bar: Any = None
        if self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                    console=Console(file=self.stream), transient=True)
            self.task = self.bar.add_task(label, total=total, completed=done, info="")
            self.bar.start()

    def update(self, done: int, info: str = "") -> None:
        """Record that `done` units are done; `info` (e.g. the latest loss) is shown until the next one."""
        self.done = done
        self.info = info or self.info
        if self.bar is not None:
            self.bar.update(self.task, completed=done, info=self.info)
        elif time.monotonic() - self.last_line >= self.every_s:
            self.note(self.line())
            self.last_line = time.monotonic()

    def line(self) -> str:
        """Where the work stands, in one plain line."""
        elapsed = time.monotonic() - self.started
        rate = (self.done - self.first) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.label}: {self.done}/{self.total} {self.unit} ({self.done / self.total:.0%})"
                 if self.total else f"{self.label}: {self.done} {self.unit}", f"{rate:.3g} {self.unit}/s"]
        if self.total and rate > 0:
            parts.append(f"ETA {format_duration((self.total - self.done) / rate)}")
        if self.info:
            parts.append(self.info)
        return ", ".join(parts)

    def note(self, line: str) -> None:
        """Print `line` on a line of its own (above the bar on a terminal)."""
        if self.bar is not None:
            self.bar.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
