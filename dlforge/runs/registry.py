"""The run registry: one SQLite table, `runs_dir/registry.db`, with a row per run.

    registry = RunRegistry("runs")
    registry.start(name, run_dir, preset, config_hash, data_fingerprint, git_revision())
    ...
    registry.finish(name, "completed", {"val/accuracy": 0.93})

Several trainings may write to the same registry at once. The database runs in WAL mode (readers never block the
writer), waits up to 30 s for a lock, and every write is one short `BEGIN IMMEDIATE` transaction, retried when
SQLite still reports the database as locked. A writer killed mid-transaction leaves the committed rows intact:
SQLite rolls the unfinished transaction back the next time the database is opened.
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from dlforge.errors import DlforgeError

REGISTRY_FILE = "registry.db"
FINISH_STATUSES = ("completed", "failed", "interrupted", "stopped")
STATUSES = ("running", *FINISH_STATUSES)
BUSY_TIMEOUT_S = 30.0
WRITE_ATTEMPTS = 5

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY,
    run_dir TEXT,
    preset TEXT,
    config_hash TEXT,
    data_fingerprint TEXT,
    git_rev TEXT,
    status TEXT,
    started REAL,
    finished REAL,
    metrics TEXT  -- JSON
)
"""

T = TypeVar("T")


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class WalDatabase:
    """A SQLite file that several processes read and write at once (WAL mode, short BEGIN IMMEDIATE writes retried
    while locked): the run registry's, and the model registry's (dlforge.deploy.model_registry). Subclasses give
    SCHEMA: the statements that create their tables (IF NOT EXISTS), run in one transaction."""

    SCHEMA: tuple[str, ...] = ()

    def __init__(self, path: Path):
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._set_wal()
        self._write(lambda conn: [conn.execute(statement) for statement in self.SCHEMA])

    # --- connection and retries ---------------------------------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # A connection per call: nothing to share across threads or forked processes, and nothing left open.
        # isolation_level=None leaves transactions to us (BEGIN IMMEDIATE ... COMMIT).
        with closing(sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)) as conn:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.row_factory = sqlite3.Row
            yield conn

    def _retry(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        attempt = 1
        while True:
            try:
                with self._connect() as conn:
                    return fn(conn)
            except sqlite3.DatabaseError as exc:
                if not (isinstance(exc, sqlite3.OperationalError) and _is_locked(exc)):
                    raise DlforgeError(f"{self.path}: {exc}") from exc
                if attempt == WRITE_ATTEMPTS:
                    raise DlforgeError(
                        f"{self.path}: database is locked by another process ({WRITE_ATTEMPTS} attempts of "
                        f"{BUSY_TIMEOUT_S:.0f} s each)"
                    ) from exc
            time.sleep(random.uniform(0.05, 0.2) * attempt)  # jitter, so two waiters do not collide again
            attempt += 1

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in its own short write transaction, retried while the database is locked."""

        def transaction(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")  # take the write lock now, not halfway through
            try:
                result = fn(conn)
            except BaseException:
                conn.rollback()
                raise
            conn.execute("COMMIT")
            return result

        return self._retry(transaction)

    def _set_wal(self) -> None:
        # journal_mode is stored in the database file; it cannot change inside a transaction.
        self._retry(lambda conn: conn.execute("PRAGMA journal_mode = WAL").fetchone())


class RunRegistry(WalDatabase):
    """The table of runs in `runs_dir/registry.db`; safe to use from several processes at once."""

    SCHEMA = (SCHEMA,)

    def __init__(self, runs_dir: str | Path = "runs"):
        super().__init__(Path(runs_dir) / REGISTRY_FILE)

    # --- writes -------------------------------------------------------------------------------------------------

    def start(
        self,
        name: str,
        run_dir: str | Path,
        preset: str | None,
        config_hash: str | None,
        data_fingerprint: str | None,
        git_rev: str | None,
    ) -> None:
        """Record a run as 'running'. Starting a name already recorded (a resumed run) keeps its first start time."""
        row = (name, str(run_dir), preset, config_hash, data_fingerprint, git_rev, "running", time.time())
        sql = """
            INSERT INTO runs (name, run_dir, preset, config_hash, data_fingerprint, git_rev, status, started)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT(name) DO UPDATE SET
                run_dir = excluded.run_dir, preset = excluded.preset, config_hash = excluded.config_hash,
                data_fingerprint = excluded.data_fingerprint, git_rev = excluded.git_rev,
                status = 'running', finished = NULL
        """
        self._write(lambda conn: conn.execute(sql, row))

    def finish(self, name: str, status: str, metrics: dict[str, Any]) -> None:
        """Record how a run ended (completed, failed, interrupted or stopped), when, and its final metrics."""
        if status not in FINISH_STATUSES:
            raise ValueError(f"status {status!r}: expected one of {', '.join(FINISH_STATUSES)}")
        blob = json.dumps(metrics)
        sql = "UPDATE runs SET status = ?, finished = ?, metrics = ? WHERE name = ?"
        self._update(name, sql, (status, time.time(), blob, name))

    def update_status(self, name: str, status: str) -> None:
        """Change a run's status only (e.g. back to 'running' on resume, or 'interrupted' from a signal handler)."""
        if status not in STATUSES:
            raise ValueError(f"status {status!r}: expected one of {', '.join(STATUSES)}")
        self._update(name, "UPDATE runs SET status = ? WHERE name = ?", (status, name))

    def delete(self, name: str) -> bool:
        """Forget a run (`dlforge runs rm`); True when it had a row."""
        return self._write(lambda conn: conn.execute("DELETE FROM runs WHERE name = ?", (name,)).rowcount) > 0

    def _update(self, name: str, sql: str, params: tuple[Any, ...]) -> None:
        changed = self._write(lambda conn: conn.execute(sql, params).rowcount)
        if changed == 0:
            raise DlforgeError(f"{self.path}: no run named {name!r} (it was never started)")

    # --- reads --------------------------------------------------------------------------------------------------

    def get(self, name: str) -> dict[str, Any] | None:
        """The run's row as a dict (metrics parsed from JSON), or None when no run has that name."""
        row = self._retry(lambda conn: conn.execute("SELECT * FROM runs WHERE name = ?", (name,)).fetchone())
        return _row_dict(row) if row is not None else None

    def list(self) -> list[dict[str, Any]]:
        """Every run, newest first, as dicts with metrics parsed from JSON."""
        rows = self._retry(lambda conn: conn.execute("SELECT * FROM runs ORDER BY started DESC, name DESC").fetchall())
        return [_row_dict(row) for row in rows]


def _row_dict(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["metrics"] = json.loads(out["metrics"]) if out["metrics"] else {}
    return out


def git_revision(cwd: str | Path | None = None) -> str | None:
    """`git rev-parse --short HEAD` of `cwd`, with `-dirty` when `git status --porcelain` lists changes.

    None when git is missing, `cwd` is not in a repository, or either command fails.
    """

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
        return done.stdout.strip()

    try:
        rev = git("rev-parse", "--short", "HEAD")
        dirty = bool(git("status", "--porcelain"))
    except (OSError, subprocess.SubprocessError):
        return None
    if not rev:
        return None
    return f"{rev}-dirty" if dirty else rev
