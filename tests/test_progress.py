"""Progress of long work: plain lines now and then (items done/total, rate, time left) and a last one outside a
terminal; a bar that goes away on a terminal; nothing after a failure."""

from __future__ import annotations

import io

import pytest

from dlforge.progress import Progress, format_duration


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_come_every_few_seconds_with_rate_and_time_left():
    clock, out = Clock(), io.StringIO()
    with Progress("rag index", total=50, unit="files", every=10, stream=out, clock=clock) as progress:
        for _ in range(50):
            clock.now += 1.0  # one file a second
            progress.advance()
    lines = out.getvalue().splitlines()
    assert lines == ["rag index: 10/50 files (20%), 1 files/s, about 40.0 s left",
                     "rag index: 20/50 files (40%), 1 files/s, about 30.0 s left",
                     "rag index: 30/50 files (60%), 1 files/s, about 20.0 s left",
                     "rag index: 40/50 files (80%), 1 files/s, about 10.0 s left",
                     "rag index: 50/50 files (100%), 1 files/s",
                     "rag index: 50/50 files in 50.0 s, 1 files/s"]


def test_unknown_total_and_a_failure():
    clock, out = Clock(), io.StringIO()
    with pytest.raises(RuntimeError), Progress("read", unit="rows", every=5, stream=out, clock=clock) as progress:
        clock.now += 6
        progress.advance(300)
        raise RuntimeError("disk gone")
    assert out.getvalue() == "read: 300 rows, 50 rows/s\n"  # no closing line: the error tells what happened
    with Progress("read", total=0, stream=out, clock=clock):
        pass
    assert out.getvalue() == "read: 300 rows, 50 rows/s\n"  # nothing to do, nothing to say


def test_on_a_terminal_a_bar_and_no_plain_lines():
    clock, out = Clock(), Terminal()
    with Progress("beam search", total=3, unit="sentences", stream=out, clock=clock) as progress:
        for _ in range(3):
            clock.now += 60
            progress.advance()
    assert "sentences/s" not in out.getvalue() and "beam search" in out.getvalue()


def test_durations_and_rates_read_naturally():
    assert [format_duration(s) for s in (4.24, 187, 3729)] == ["4.2 s", "3 min 07 s", "1 h 02 min 09 s"]
    clock, out = Clock(), io.StringIO()
    with Progress("beam search", total=5000, unit="sentences", stream=out, clock=clock) as progress:
        clock.now += 2.5
        progress.advance(5000)
    assert out.getvalue().splitlines()[-1] == "beam search: 5000/5000 sentences in 2.5 s, 2000 sentences/s"
