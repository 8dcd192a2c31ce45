"""User-facing errors.

Every error a person can cause (a bad config key, a broken CSV, a tampered checkpoint) is a `DlforgeError`: the CLI
prints its message on one line and exits with code 2, with no traceback unless `--debug` is given. The message names
the file and line, the config key or the field that is wrong, and what was expected.
"""

from __future__ import annotations

import contextlib
import difflib
import reprlib
import signal
import sys
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError

ECHO_LIMIT = 200  # characters of a person's input that an error message repeats; the rest becomes "..."


class DlforgeError(Exception):
    """An error caused by the user's input; its message is one line meant for a person."""

    exit_code = 2


class ConfigError(DlforgeError):
    """A config key that is unknown, of the wrong type or out of range."""


class DataError(DlforgeError):
    """Data that is missing, malformed or unusable for the task."""


class CheckpointError(DlforgeError):
    """A checkpoint or model folder that is missing, altered, or does not match its config."""


class TrainingError(DlforgeError):
    """Training cannot go on (for example a NaN loss under `nan_policy: stop`)."""


def warn(message: str) -> None:
    """Say on stderr, in one line starting with `warning: `, something a person should know that does not stop the
    work (an old name read as its new one, a value the model never saw in training...)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def note(message: str) -> None:
    """Say on stderr, in one plain line, what a person may want to know of the work as it goes (what a run resumed
    from, what it started from, which weights are evaluated)."""
    print(message, file=sys.stderr, flush=True)


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    """`text` as an error message repeats it: at most `limit` characters, the cut marked with "..."."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, ECHO_LIMIT, ECHO_LIMIT


def clip_repr(value: Any, limit: int = ECHO_LIMIT) -> str:
    """`repr(value)` for an error message, cut to `limit` characters: built by `reprlib`, which stops after a few
    items and levels, so a huge or deeply nested value costs no more than a short one."""
    return clip(_REPR.repr(value), limit)


class Interrupted(BaseException):  # noqa: N818 - named for what happened, as KeyboardInterrupt is
    """SIGINT or SIGTERM, raised while `raising_on_signals` holds: a BaseException, as KeyboardInterrupt is, so that
    no `except Exception` swallows it. Cleanup runs, a run is recorded as interrupted, and the CLI exits with the
    shell's code for the signal (128 + its number: 130, 143)."""

    def __init__(self, signum: int):
        self.signal = signal.Signals(signum)
        super().__init__(self.signal.name)

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signal)


@contextlib.contextmanager
def raising_on_signals() -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM raise `Interrupted` (SIGTERM would otherwise end the process on the
    spot, with no message and nothing recorded). Only the main thread can set handlers; elsewhere nothing changes."""

    def handler(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    previous = {}
    with contextlib.suppress(ValueError):
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# --- config errors, worded for people (shared by the config schema, the registry and every config class) ---


def validation_to_config_error(exc: Exception, prefix: str, fields: list[str] | None = None) -> ConfigError | None:
    """Turn pydantic's ValidationError (or a dataclass TypeError) into one ConfigError line naming the key."""
    if isinstance(exc, ConfigError):
        return exc
    if isinstance(exc, TypeError):  # e.g. "__init__() got an unexpected keyword argument 'hiden'"
        msg = str(exc)
        if "unexpected keyword argument" in msg:
            bad = msg.split("'")[-2]
            return ConfigError(f"{prefix}.{clip(bad)}: unknown key{_suggest(bad, fields or [])}")
        return None
    if not isinstance(exc, ValidationError):
        return None
    e = exc.errors()[0]
    loc = _clean_loc(e["loc"])
    key = clip(".".join([prefix, *loc]) if prefix else ".".join(loc))
    if e["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        candidates = [f"{prefix}.{f}" if prefix else f for f in (fields or [])]
        return ConfigError(f"{key}: unknown key{_suggest(key, candidates)}")
    if e["type"] == "missing":
        return ConfigError(f"{key}: missing; this key is required")
    got = e.get("input")
    msg = e["msg"].removeprefix("Value error, ")
    same = [x for x in exc.errors() if _clean_loc(x["loc"]) == _clean_loc(e["loc"])]
    if len(same) > 1:  # a union (int | 'full', say): name every form it accepts
        msg = "expected " + " or ".join(dict.fromkeys(_expected(x) for x in same))
    got_txt = f", got {clip_repr(got)}" if not isinstance(got, dict) else ""
    return ConfigError(f"{key}: {msg}{got_txt}")


def _clean_loc(loc: tuple) -> list[str]:
    # pydantic puts union branch tags (int, literal['full'], function-after[...]) into the location; drop them
    return [str(p) for p in loc if not str(p).startswith(("function-", "literal[", "int", "float", "str", "bool"))]


_EXPECTED = {"int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
             "list": "a list", "dict": "a mapping", "none": "null", "tuple": "a list"}


def _expected(error: dict) -> str:
    if error["type"] == "literal_error":
        return error["ctx"]["expected"]
    kind = error["type"].split("_")[0]
    return _EXPECTED.get(kind, error["msg"].removeprefix("Value error, "))


def unknown_key(key: str, candidates: list[str]) -> ConfigError:
    """`key: unknown key; did you mean ...?`, the closest of `candidates` (full dotted keys) suggested."""
    return ConfigError(f"{clip(key)}: unknown key{_suggest(key, candidates)}")


def _suggest(key: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if not close:
        return ""
    return f"; did you mean {close[0]!r}?"
