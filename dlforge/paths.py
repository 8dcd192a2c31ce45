"""Paths a person gives, checked before any work: each mistake is one `DataError` line naming the path, what it is
and what was expected.

    existing_file(input_path, "a CSV or Parquet file of rows")   # the path; or "x: is a folder; expected a CSV ..."
    output_file(out, "the predictions CSV", suffixes=(".csv",))   # a file that can be written there
    refuse_existing(out, overwrite)                               # an output folder: replaced only with --overwrite

The commands call these before they import torch, so a wrong path is told at once; the API and the libraries call
them too. This module imports nothing but `dlforge.errors`.
"""

from __future__ import annotations

import os
from pathlib import Path

from dlforge.errors import ConfigError, DataError, DlforgeError, clip

NAME_MAX = 255  # bytes in one file or folder name (Linux, macOS, Windows)
PATH_MAX = 4096  # bytes in a whole path (Linux)
RUN_NAME_MAX = 200  # bytes in a run's name: its folder, <name>-<YYYYmmdd-HHMMSS>[-N], must fit in NAME_MAX


def exists(path: str | Path) -> bool:
    """Whether `path` exists; False for a path no file can have (a name too long, a NUL), where `Path.exists`
    raises."""
    try:
        return _fits(path).exists()
    except DataError:
        return False


def existing(path: str | Path, what: str) -> Path:
    """`path` if it exists, a file or a folder; `what` says what was expected ("a CSV file or a folder of images")."""
    path = _fits(path)
    if not path.exists():
        raise DataError(f"{_show(path)}: not found; expected {what}")
    return path


def existing_file(path: str | Path, what: str, error: type[DlforgeError] = DataError) -> Path:
    """`path` if it is a file; `what` says what was expected ("a CSV file of rows"), `error` is raised otherwise (a
    config file's is a ConfigError)."""
    path = _fits(path, error)
    if not path.is_file():
        raise error(f"{_show(path)}: {_not_there(path)}; expected {what}")
    return path


def existing_dir(path: str | Path, what: str) -> Path:
    """`path` if it is a folder; `what` says what was expected ("a folder of documents")."""
    path = _fits(path)
    if not path.is_dir():
        raise DataError(f"{_show(path)}: {_not_there(path)}; expected {what}")
    return path


def output_file(path: str | Path, what: str, suffixes: tuple[str, ...] = (), parents: bool = False) -> Path:
    """`path` if a file can be written there: not a folder, a suffix among `suffixes` (if given), in a folder that
    exists (or, with `parents`, will be made in the nearest existing one) and that this process may write to."""
    path = _fits(path)
    if path.is_dir():
        raise DataError(f"{_show(path)}: is a folder; expected {what}")
    if suffixes and path.suffix.lower() not in suffixes:
        raise DataError(f"{_show(path)}: expected {what}, a {' or '.join(suffixes)} file")
    if not parents and not path.parent.exists():
        raise DataError(f"{_show(path)}: the folder {_show(path.parent)} does not exist")
    _writable_parent(path)
    return path


def output_folder(path: str | Path, what: str) -> Path:
    """`path` if a folder can be written there (it may exist already): not a file, and its nearest existing parent a
    folder this process may write to."""
    path = _fits(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"{_show(path)}: is a file; expected {what}")
    _writable_parent(path)
    return path


def refuse_existing(out: str | Path, overwrite: bool) -> Path:
    """The one rule for every command that writes an output folder: an existing `out` (a folder, or a file where a
    folder would go) is replaced only with `--overwrite`. Checked before any work, so nothing is lost and nothing is
    half-done."""
    out = _fits(out)
    if (out.exists() or out.is_symlink()) and not overwrite:
        kind = "folder" if out.is_dir() else "file"
        raise DataError(f"{_show(out)}: already exists; pass --overwrite to replace it (it is a {kind})")
    if out.exists() and not out.is_dir():
        raise DataError(f"{_show(out)}: is a file; the output is a folder: give another path")
    _writable_parent(out)
    return out


def fitting_name(name: str, what: str, limit: int = NAME_MAX) -> str:
    """`name` if it can name a file or folder: not empty, not . or .., no '/', '\\' or NUL, at most `limit` bytes
    in UTF-8 (a ConfigError: a name is a setting)."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ConfigError(f"{what} {clip(repr(name))}: expected a non-empty name without '/' or '\\'")
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > limit:
        raise ConfigError(f"{what} {clip(repr(name))}: {size} bytes long; at most {limit} (it names a folder)")
    return name


def _fits(path: str | Path, error: type[DlforgeError] = DataError) -> Path:
    # the OS answers a longer path with ENAMETOOLONG, and Python a NUL with ValueError, even to say whether it exists
    path = Path(path)
    if "\0" in str(path):
        raise error(f"{clip(repr(str(path)))}: a path cannot hold a NUL character")
    if len(os.fsencode(path)) > PATH_MAX or any(len(os.fsencode(part)) > NAME_MAX for part in path.parts):
        raise error(f"{_show(path)}: too long a path (at most {NAME_MAX} bytes a name, {PATH_MAX} in all)")
    return path


def _not_there(path: Path) -> str:
    if path.is_dir():
        return "is a folder"
    if path.exists():
        return "is a file" if path.is_file() else "is not a file or folder"
    return "not found"


def _writable_parent(path: Path) -> None:
    parent = next(p for p in path.parents if p.exists())  # the last of them, "." or "/", exists
    if not parent.is_dir():
        raise DataError(f"{_show(path)}: cannot be written: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f"{_show(path)}: cannot be written: no permission to write in {parent}")


def _show(path: Path) -> str:
    return clip(str(path))
