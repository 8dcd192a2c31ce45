"""The run folder: naming, finding a run again, its lock, crash-safe writes and the metrics log.

    runs/<name>-<YYYYmmdd-HHMMSS>/
        config.yaml  metrics.jsonl  metrics.csv  plots/  checkpoints/checkpoint-<step>/  model/  README.md  eval.json
        .lock  (held by the one process writing the run)

A folder is a run when it holds `config.yaml`. `metrics.jsonl` has one JSON object per line: training rows
(`step`, `epoch`, `loss`, `lr`, ...) and evaluation rows that carry a `split` and metric keys prefixed by it
(`"split": "val", "val/loss": 0.4, "val/accuracy": 0.93`).
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import errno
import io
import json
import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from dlforge.errors import DlforgeError, clip, clip_repr
from dlforge.paths import exists

WORKSPACE = Path("runs")  # the default runs_dir, and where every command's default output goes (git ignores it)
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
LOCK_FILE = ".lock"
LOCK_WAIT_S = 10.0  # how long a lock left to the DataLoader workers of a killed run may take to go
LEADING_COLUMNS = ("step", "epoch", "split")

# "<name>-20250101-120000" or, for the second run started in the same second, "<name>-20250101-120000-2"
_STAMP = re.compile(r"-(\d{8}-\d{6})(?:-(\d+))?$")
_BAD_NAME_CHARS = re.compile(r"[/\\\x00]")


# --- naming and finding runs ------------------------------------------------------------------------------------


def new_run_dir(runs_dir: str | Path, name: str) -> Path:
    """Create and return a fresh `runs_dir/<name>-<YYYYmmdd-HHMMSS>` folder.

    When a run of that name started in the same second, `-2`, `-3`, ... is appended. `mkdir` either creates the
    folder or fails because it exists, atomically, so two processes can never be handed the same folder.
    """
    if not name or name in (".", "..") or _BAD_NAME_CHARS.search(name):
        raise DlforgeError(f"run name {name!r}: expected a non-empty name without '/' or '\\'")
    root = Path(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    base = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    attempt = 1
    while True:
        path = root / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            path.mkdir(exist_ok=False)
            return path
        except FileExistsError:
            attempt += 1


def workspace_path(kind: str, name: str) -> Path:
    """Where a command writes its output when no --out is given: `runs/<kind>/<name>` (`runs/tokenizers/...`,
    `runs/shards/...`, `runs/models/...`, `runs/merged/...`, `runs/exports/...`), inside the workspace beside the
    runs, so that nothing lands in a source tree. Such folders hold no config.yaml: they are never taken for runs."""
    return WORKSPACE / kind / name


def source_name(ref: str | Path) -> str:
    """The name a default output is named after: the run of `RUN/model` or `RUN/adapter`, a run reference
    (`latest` resolved to its folder), or a folder's own name."""
    path = Path(ref).resolve() if Path(ref).exists() else resolve_run(str(ref))
    return path.parent.name if path.name in ("model", "adapter") else path.name


def is_run_dir(path: Path) -> bool:
    """True when `path` is a folder holding a `config.yaml`."""
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def is_finished(path: Path) -> bool:
    """True for a run that completed: its model folder and eval.json are written (an interrupted or failed run has
    neither)."""
    return (path / "model" / "config.json").is_file() and (path / "eval.json").is_file()


def list_run_dirs(runs_dir: str | Path = "runs") -> list[Path]:
    """The run folders directly inside `runs_dir`, oldest first (see `resolve_run` for the order)."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if is_run_dir(p)), key=_start_order)


def _start_order(path: Path) -> tuple[float, int, str]:
    # The timestamp in the folder name is when the run started; the folder's mtime moves whenever a file is added
    # (an evaluation of an old run, say), so it only serves for folders named some other way.
    match = _STAMP.search(path.name)
    if match:
        try:
            started = datetime.strptime(match.group(1), "%Y%m%d-%H%M%S").timestamp()
            return started, int(match.group(2) or 1), path.name
        except ValueError:  # digits that are no date, e.g. "-20251399-000000"
            pass
    return path.stat().st_mtime, 0, path.name


def resolve_run(ref: str, runs_dir: str | Path = "runs", finished: bool = True) -> Path:
    """Find a run folder from what a person typed.

    `ref` is, in the order tried: `latest` (the finished run that started last in `runs_dir`; with
    `finished=False`, the run that started last, finished or not: what `--resume latest` continues), `latest:NAME`
    (the same among the runs of the config named NAME, i.e. whose folder is `NAME-<time>`), a path to a run folder, the
    name of a run folder inside `runs_dir`, or a prefix that exactly one run folder name inside `runs_dir` starts
    with. Raises `DlforgeError` when nothing matches, when a prefix matches several runs, or when the only folder
    found has no `config.yaml`.
    """
    root = Path(runs_dir)
    if ref == "latest":
        runs = list_run_dirs(root)
        if not runs:
            raise DlforgeError(f"latest: no run folders (with {CONFIG_FILE}) in {root}")
        return _newest(ref, runs, finished)
    if ref.startswith("latest:"):
        name = ref.split(":", 1)[1]
        runs = [p for p in list_run_dirs(root) if (m := _STAMP.search(p.name)) and p.name[: m.start()] == name]
        if not runs:
            raise DlforgeError(f"{clip(ref)}: no run of {clip_repr(name)} in {root}; {_how_to_get(name, root)}")
        return _newest(ref, runs, finished)

    exact = [p for p in (Path(ref), root / ref) if exists(p)]  # a name too long for a file is no path either
    for path in exact:
        if is_run_dir(path):
            return path

    runs = list_run_dirs(root)
    matches = [p for p in runs if p.name.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        shown = ", ".join(p.name for p in matches[:5])
        more = f" and {len(matches) - 5} more" if len(matches) > 5 else ""
        raise DlforgeError(f"run {ref!r} is ambiguous in {root}: matches {shown}{more}; give more of the name")
    if exact:
        raise DlforgeError(f"{exact[0]}: not a run folder (no {CONFIG_FILE})")
    close = difflib.get_close_matches(ref, [p.name for p in runs], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise DlforgeError(f"run {clip_repr(ref)}: no such run folder, run name or name prefix in {root}{hint}")


def _how_to_get(name: str, root: Path) -> str:
    """What to do when `latest:NAME` finds no run: train the preset NAME, or a likely name it misspelt."""
    from dlforge.config import list_presets

    presets = list(list_presets())
    if name in presets:
        return f"train it first (dlforge train {name})"
    trained = sorted({p.name[: m.start()] for p in list_run_dirs(root) if (m := _STAMP.search(p.name))})
    close = difflib.get_close_matches(name, trained, n=1)
    if close:
        return f"did you mean 'latest:{close[0]}'?"
    close = difflib.get_close_matches(name, presets, n=1)
    if close:
        return f"and no preset is called that; did you mean {close[0]!r} (train it first: dlforge train {close[0]})?"
    return "and no preset is called that (see `dlforge presets`; a run of NAME is a folder NAME-<time>)"


def _newest(ref: str, runs: list[Path], finished: bool) -> Path:
    """The last of `runs` (oldest first), or with `finished` the last finished one, saying on stderr which newer
    unfinished runs it passed over (interrupted: resume them; failed: see their metrics)."""
    if not finished:
        return runs[-1]
    done = [p for p in runs if is_finished(p)]
    newer = runs[runs.index(done[-1]) + 1:] if done else runs
    if newer:
        names = ", ".join(p.name for p in newer[-3:])
        print(f"note: {ref} is the newest finished run; passed over {len(newer)} newer unfinished ({names}); "
              f"continue one with: dlforge train --resume RUN", file=sys.stderr, flush=True)
    if not done:
        raise DlforgeError(f"{ref}: no finished run in {runs[-1].parent} (the newest, {runs[-1].name}, did not "
                           f"finish: dlforge train --resume {runs[-1]})")
    return done[-1]


def model_dir(path: str | Path, runs_dir: str | Path = "runs") -> Path:
    """The model folder (config.json + model.safetensors) of a model folder itself, or of a run reference."""
    p = Path(path)
    if exists(p / "config.json"):
        return p
    run = resolve_run(str(path), runs_dir)
    if not (run / "model" / "config.json").exists():
        raise DlforgeError(f"{run}: has no model/ folder yet (training did not finish); resume it with --resume")
    return run / "model"


# --- one writer per run folder ------------------------------------------------------------------------------------


def pid_running(pid: int) -> bool:
    """True when a process with this id exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process, or a pid this OS cannot express
        pass
    return True


@contextlib.contextmanager
def lock_run_dir(path: str | Path) -> Iterator[None]:
    """Hold the run folder's lock while the block runs: one process writes a run at a time.

    A second process (a second `--resume`, the same `--run-dir` started twice) is refused with a `DlforgeError`
    naming the first one's pid. The lock is the OS's (`flock` on `<run>/.lock`), so it goes when its process ends,
    by kill -9 too; DataLoader workers inherit it and outlive a killed run by a few seconds, which is waited for.
    Where the OS has no `flock` (Windows) the folder is not locked.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(Path(path) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _lock_holder(fd)
                if (holder is not None and pid_running(holder)) or time.monotonic() > deadline:
                    who = f"pid {holder}" if holder is not None else "pid unknown"
                    raise DlforgeError(f"{path}: another dlforge process ({who}) is writing this run; one process "
                                       f"writes a run at a time: wait for it to end, or stop it") from None
                time.sleep(0.1)  # its process is gone (or has not written its pid yet): the lock goes shortly
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _lock_holder(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    return int(text) if text.isdigit() else None


# --- crash-safe writes ------------------------------------------------------------------------------------------

# errno -> what it means for a write, and what to do; Rust code (safetensors) words an OS error "... (os error 28)"
_NO_ROOM = {errno.ENOSPC: ("no space left on the device", "free some space and try again"),
            errno.EDQUOT: ("disk quota exceeded", "free some space and try again"),
            errno.EFBIG: ("the file size limit was reached", "raise it (ulimit -f) and try again")}
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


@contextlib.contextmanager
def reporting_full_disk(path: str | Path, needed: int | None = None) -> Iterator[None]:
    """Turn a full disk (or a quota, or a file size limit) met while writing `path` into one `DlforgeError` line
    that names `path`, the bytes it needed (`needed`, when known) and the space free there."""
    try:
        yield
    except Exception as exc:
        code = exc.errno if isinstance(exc, OSError) else None
        match = _RUST_OS_ERROR.search(str(exc))
        code = int(match.group(1)) if code is None and match else code
        if code not in _NO_ROOM:
            raise
        reason, fix = _NO_ROOM[code]
        need = f"needs about {format_bytes(needed)}; " if needed is not None else ""
        raise DlforgeError(f"{path}: could not be written: {reason} ({need}{format_bytes(_free(path))} free there); "
                           f"{fix}") from exc


def _free(path: str | Path) -> int:
    folder = Path(path).absolute()
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free


def format_bytes(n: float) -> str:
    """1536 -> '1.5 kB'; decimal units, as df -H and file managers show them."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable. Not every platform or file system lets a folder be opened or synced.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves either the old file or the new one, never a mix.

    Writes a temporary file in the same folder, flushes and fsyncs it, renames it over `path` (atomic on POSIX and
    Windows) and fsyncs the folder so the rename survives a power cut.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    with reporting_full_disk(path, len(data)):
        # os.open with 0o666 honours the umask, as a plain open() would; tempfile.mkstemp would force 0o600.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with UTF-8 `text` atomically (see `atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Replace `path` with `obj` as indented JSON, atomically (see `atomic_write_bytes`)."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


# --- the metrics log --------------------------------------------------------------------------------------------


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Read a metrics.jsonl file into a list of rows.

    A last line that does not parse is what a crash in the middle of a write leaves behind; it is dropped. A bad
    line anywhere else raises `DlforgeError` naming the file and line. A null value (how a NaN or infinite metric is
    written, so that every line is strict JSON) is read as NaN.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise DlforgeError(f"{path}: metrics file not found") from None
    lines = text.splitlines()
    rows = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if lineno == len(lines):
                break  # torn last line
            raise DlforgeError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise DlforgeError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append({k: float("nan") if v is None else v for k, v in row.items()})
    return rows


def trim_metrics(path: Path, size: int, max_step: int | None = None) -> None:
    """Cut a metrics log back to what a checkpoint recorded of it: its first `size` bytes, of which only complete
    lines of valid JSON whose step is at most `max_step` are kept. A log that is shorter (trimmed by hand, or its
    unsynced tail lost in a power cut) keeps what is valid of it; it is never padded."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb") as f:
        head = f.read(size)
    kept = b"".join(line for line in head.splitlines(keepends=True) if _row_before(line, max_step))
    if kept == head:
        os.truncate(path, len(head))
    else:
        atomic_write_bytes(path, kept)


def _row_before(line: bytes, max_step: int | None) -> bool:
    if not line.endswith(b"\n"):
        return False  # torn
    try:
        row = json.loads(line)
    except ValueError:  # not JSON, not UTF-8, NUL bytes
        return False
    return isinstance(row, dict) and (max_step is None or not isinstance(row.get("step"), int)
                                      or row["step"] <= max_step)


def metrics_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The union of the rows' keys: step, epoch and split first, then the rest in order of first appearance."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    leading = [k for k in LEADING_COLUMNS if k in seen]
    return leading + [k for k in seen if k not in LEADING_COLUMNS]


def write_metrics_csv(jsonl_path: Path, csv_path: Path) -> None:
    """Write metrics.jsonl as a CSV whose header is the union of all keys; cells a row lacks stay empty."""
    rows = read_metrics(jsonl_path)
    columns = metrics_columns(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()})
    atomic_write_text(Path(csv_path), buffer.getvalue())
