"""The model registry: named, numbered, immutable versions of trained models, and aliases that move.

    registry = ModelRegistry("runs")                        # runs/models.db; each version's files in runs/models/
    version = registry.add("runs/fashion-resnet-...", "fashion")   # fashion@1: a copy of the run's model folder
    registry.set_alias("fashion", "champion", 1)
    registry.resolve("fashion@champion")                    # the version's record, its files checked
    registry.alias_at("fashion", "champion", when)          # the version the alias named at time `when`

As MLflow's registry since it deprecated stages for aliases: a version never changes once added. Its model folder
is copied to `runs/models/NAME/N/` and its manifest's SHA-256 recorded with it, so retraining or deleting the run
changes nothing, and a changed file is found when the version is loaded. Each version records where it came from:
the run, its config hash, data fingerprint and code revision (from the run registry), its final metrics (eval.json)
and the task's input/output signature. An alias names one version of a name and moves; every move (and removal) is
appended to a history that is never rewritten (SQLite triggers refuse updates and deletes), so a rollback is one
more move and "which version was `champion` at 14:00" is a query. `NAME@latest` (or `NAME` alone) is the newest
version and can't be set.

Several processes may add versions and move aliases at once: the database is the run registry's kind (SQLite in WAL
mode, one short BEGIN IMMEDIATE transaction per write, retried while locked) and a version's number is taken inside
the transaction that records it. Its files are copied and checked first, under a scratch name, and renamed into
place inside that transaction: a writer killed at any point leaves a complete version with its row, or no row and
a folder that the next writer of that name removes.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from dlforge.errors import DlforgeError
from dlforge.runs.registry import REGISTRY_FILE, RunRegistry, WalDatabase
from dlforge.runs.rundir import is_run_dir, model_dir

MODEL_FORMAT = "dlforge-model"  # dlforge.artifacts', which imports torch: that module is imported when files are read
DB_FILE = "models.db"
FILES_DIR = "models"
LATEST = "latest"
PREFIX = "registry:"  # how a served or evaluated model names a registry version: registry:NAME@ALIAS
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS versions (
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        created REAL NOT NULL,
        description TEXT,
        model TEXT,             -- the architecture's registry name (config.json)
        task TEXT,
        source TEXT,            -- the model folder it was copied from
        run TEXT,               -- the run's name, when it came from a run
        preset TEXT,
        config_hash TEXT,
        data_fingerprint TEXT,
        git_rev TEXT,
        manifest_sha256 TEXT NOT NULL,  -- of the copy's manifest.json, which holds every file's SHA-256
        metrics TEXT,           -- JSON: {"test/accuracy": ...}
        signature TEXT,         -- JSON: the task's inputs and outputs
        PRIMARY KEY (name, version)
    )""",
    """CREATE TABLE IF NOT EXISTS alias_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        alias TEXT NOT NULL,
        version INTEGER,        -- NULL: the alias was removed
        previous INTEGER,       -- the version it named before
        at REAL NOT NULL,
        reason TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS alias_lookup ON alias_history (name, alias, id)",
    *(f"""CREATE TRIGGER IF NOT EXISTS {table}_{op.lower()}_refused BEFORE {op} ON {table}
        BEGIN SELECT RAISE(ABORT, '{table} rows are never changed'); END"""
      for table in ("versions", "alias_history") for op in ("UPDATE", "DELETE")),
)


class RegistryError(DlforgeError):
    """A registry reference or operation that can't be done, said in one line."""


def parse_ref(ref: str) -> tuple[str, str | int]:
    """`NAME@N` -> (NAME, N); `NAME@ALIAS` -> (NAME, ALIAS); `NAME` -> (NAME, 'latest'). A `registry:` prefix is
    allowed."""
    text = ref[len(PREFIX):] if ref.startswith(PREFIX) else ref
    name, _, which = text.partition("@")
    check_name(name)
    if not which:
        return name, LATEST
    if which.isdigit():
        return name, int(which)
    if not _ALIAS.fullmatch(which):
        raise RegistryError(f"{ref!r}: expected NAME@VERSION (a number) or NAME@ALIAS (letters, digits, _ and -)")
    return name, which


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise RegistryError(f"model name {name!r}: expected 1-64 letters, digits, '.', '_' or '-', starting with a "
                            "letter or digit")
    return name


def check_alias(alias: str) -> str:
    if not _ALIAS.fullmatch(alias) or alias == LATEST:
        raise RegistryError(f"alias {alias!r}: expected a word of letters, digits, _ and - that starts with a letter "
                            f"(not a number, and not {LATEST!r}, which always names the newest version)")
    return alias


def parse_time(text: str) -> float:
    """Seconds since the epoch from an ISO 8601 time (`2026-12-03T14:00`, local time unless it says its zone) or a
    number of seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise RegistryError(f"time {text!r}: expected ISO 8601 (2026-12-03T14:00:00, +00:00 for UTC) or seconds "
                            "since the epoch") from None


class ModelRegistry(WalDatabase):
    """Versions and aliases in `runs_dir/models.db`, the versions' files under `runs_dir/models/`."""

    SCHEMA = SCHEMA

    def __init__(self, runs_dir: str | Path = "runs", create: bool = True):
        self.runs_dir = Path(runs_dir)
        self.files = self.runs_dir / FILES_DIR
        if not create and not (self.runs_dir / DB_FILE).is_file():
            raise RegistryError(f"{self.runs_dir / DB_FILE}: no model registry here yet; add a version with "
                                "dlforge registry add RUN --name NAME")
        super().__init__(self.runs_dir / DB_FILE)

    # --- versions -----------------------------------------------------------------------------------------------

    def add(self, source: str | Path, name: str, description: str | None = None) -> dict[str, Any]:
        """A new version of `name` from a run (or a model folder): its files copied and checked, then recorded."""
        from dlforge.artifacts import clean_stale_folders, file_sha256, read_json, scratch_path, verify_folder

        check_name(name)
        folder = model_dir(source, self.runs_dir)
        verify_folder(folder, MODEL_FORMAT, ["model.safetensors", "config.json"])
        facts = _provenance(folder)
        parent = self.files / name
        parent.mkdir(parents=True, exist_ok=True)
        clean_stale_folders(parent)
        incoming = scratch_path(parent / "incoming", "tmp")
        try:
            incoming.mkdir()
            for entry in [*read_json(folder / "manifest.json")["files"], "manifest.json"]:
                shutil.copy2(folder / entry, incoming / entry)
            verify_folder(incoming, MODEL_FORMAT, ["model.safetensors", "config.json"])
            manifest_sha = file_sha256(incoming / "manifest.json")
            if manifest_sha != file_sha256(folder / "manifest.json"):
                raise RegistryError(f"{folder}: its files changed while they were copied; add it again")

            def record(conn: sqlite3.Connection) -> int:
                number = conn.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE name = ?",
                                      (name,)).fetchone()[0]
                final = parent / str(number)
                if final.exists():  # left by a writer killed before its row was committed
                    shutil.rmtree(final)
                incoming.rename(final)
                conn.execute(
                    "INSERT INTO versions (name, version, created, description, model, task, source, run, preset, "
                    "config_hash, data_fingerprint, git_rev, manifest_sha256, metrics, signature) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, number, time.time(), description, facts["model"], facts["task"], str(folder.resolve()),
                     facts["run"], facts["preset"], facts["config_hash"], facts["data_fingerprint"],
                     facts["git_rev"], manifest_sha, json.dumps(facts["metrics"]), json.dumps(facts["signature"])))
                return number

            number = self._write(record)
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
        return self.version(name, number)

    def version(self, name: str, which: str | int = LATEST) -> dict[str, Any]:
        """One version's record (with its `folder` and current `aliases`): by number, alias or 'latest'."""
        number = self._number(name, which)
        row = self._retry(lambda conn: conn.execute("SELECT * FROM versions WHERE name = ? AND version = ?",
                                                    (name, number)).fetchone())
        if row is None:
            raise RegistryError(f"{name}@{number}: no such version ({self._known(name)})")
        return self._record(row, self.aliases(name))

    def resolve(self, ref: str) -> dict[str, Any]:
        """`NAME@N`, `NAME@ALIAS` or `NAME`: the version's record, its files checked against its manifest and the
        manifest against the SHA-256 recorded when it was added."""
        from dlforge.artifacts import file_sha256, verify_folder

        name, which = parse_ref(ref)
        record = self.version(name, which)
        folder = Path(record["folder"])
        verify_folder(folder, MODEL_FORMAT, ["model.safetensors", "config.json"])
        if file_sha256(folder / "manifest.json") != record["manifest_sha256"]:
            raise RegistryError(f"{folder}: its manifest is not the one recorded for {name}@{record['version']} "
                                "(the files were changed after it was added)")
        return record

    def versions(self, name: str) -> list[dict[str, Any]]:
        """Every version of `name`, newest first."""
        rows = self._retry(lambda conn: conn.execute(
            "SELECT * FROM versions WHERE name = ? ORDER BY version DESC", (name,)).fetchall())
        aliases = self.aliases(name)
        return [self._record(row, aliases) for row in rows]

    def names(self) -> list[dict[str, Any]]:
        """One row per name: its version count, newest version and when it was added, and its aliases."""
        rows = self._retry(lambda conn: conn.execute(
            "SELECT name, COUNT(*) AS versions, MAX(version) AS latest, MAX(created) AS updated FROM versions "
            "GROUP BY name ORDER BY name").fetchall())
        return [{**dict(row), "aliases": self.aliases(row["name"])} for row in rows]

    # --- aliases ------------------------------------------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: int | None, reason: str | None = None) -> dict[str, Any]:
        """Point `alias` at `version` (None removes it); returns the history event (unchanged: no event added)."""
        check_alias(alias)

        def move(conn: sqlite3.Connection) -> dict[str, Any]:
            if version is not None and conn.execute("SELECT 1 FROM versions WHERE name = ? AND version = ?",
                                                    (name, version)).fetchone() is None:
                raise RegistryError(f"{name}@{version}: no such version ({self._known(name, conn)})")
            previous = _current(conn, name, alias)
            if version is None and previous is None:
                raise RegistryError(f"{name}@{alias}: no such alias")
            if previous == version:
                return {"name": name, "alias": alias, "version": version, "previous": previous, "unchanged": True}
            at = time.time()
            conn.execute("INSERT INTO alias_history (name, alias, version, previous, at, reason) VALUES "
                         "(?, ?, ?, ?, ?, ?)", (name, alias, version, previous, at, reason))
            return {"name": name, "alias": alias, "version": version, "previous": previous, "at": at,
                    "reason": reason, "unchanged": False}

        return self._write(move)

    def rollback(self, name: str, alias: str) -> dict[str, Any]:
        """Move `alias` back to the version it named before its current one (itself a move, in the history)."""
        check_alias(alias)
        events = [e for e in self.history(name, alias) if e["version"] is not None]
        current = self._retry(lambda conn: _current(conn, name, alias))
        if current is None:
            raise RegistryError(f"{name}@{alias}: no such alias")
        earlier = [e["version"] for e in events if e["version"] != current]
        if not earlier:
            raise RegistryError(f"{name}@{alias}: has named only version {current}; nothing to roll back to")
        return self.set_alias(name, alias, earlier[-1], reason=f"rollback from {current}")

    def aliases(self, name: str) -> dict[str, int]:
        """The aliases of `name` and the version each names now."""
        rows = self._retry(lambda conn: conn.execute(
            "SELECT alias, version FROM alias_history WHERE id IN (SELECT MAX(id) FROM alias_history WHERE name = ? "
            "GROUP BY alias) ORDER BY alias", (name,)).fetchall())
        return {row["alias"]: row["version"] for row in rows if row["version"] is not None}

    def history(self, name: str, alias: str | None = None) -> list[dict[str, Any]]:
        """Every move of `name`'s aliases (or of one), oldest first."""
        sql, params = "SELECT * FROM alias_history WHERE name = ?", [name]
        if alias is not None:
            sql, params = sql + " AND alias = ?", [*params, alias]
        rows = self._retry(lambda conn: conn.execute(sql + " ORDER BY id", params).fetchall())
        return [dict(row) for row in rows]

    def alias_at(self, name: str, alias: str, when: float) -> int | None:
        """The version `alias` named at time `when` (seconds since the epoch); None when it named none."""
        row = self._retry(lambda conn: conn.execute(
            "SELECT version FROM alias_history WHERE name = ? AND alias = ? AND at <= ? ORDER BY id DESC LIMIT 1",
            (name, alias, when)).fetchone())
        return None if row is None else row["version"]

    def aliases_at(self, name: str, when: float, alias: str | None = None) -> dict[str, int | None]:
        """Each alias of `name` that ever existed (or `alias` alone) and the version it named at `when`."""
        names = [alias] if alias else sorted({e["alias"] for e in self.history(name)})
        return {a: self.alias_at(name, a, when) for a in names}

    # --- helpers ------------------------------------------------------------------------------------------------

    def _number(self, name: str, which: str | int) -> int:
        check_name(name)
        if isinstance(which, int):
            return which
        if which == LATEST:
            found = self._retry(lambda conn: conn.execute("SELECT MAX(version) FROM versions WHERE name = ?",
                                                          (name,)).fetchone()[0])
            if found is None:
                raise RegistryError(f"no model named {name!r} in {self.path} ({self._names_hint()})")
            return found
        number = self._retry(lambda conn: _current(conn, name, which))
        if number is None:
            known = ", ".join(self.aliases(name)) or "none"
            raise RegistryError(f"{name}@{which}: no such alias (aliases of {name}: {known})")
        return number

    def _known(self, name: str, conn: sqlite3.Connection | None = None) -> str:
        sql = "SELECT version FROM versions WHERE name = ? ORDER BY version"
        rows = conn.execute(sql, (name,)).fetchall() if conn else self._retry(lambda c: c.execute(sql, (name,))
                                                                                 .fetchall())
        return f"versions of {name}: {', '.join(str(r[0]) for r in rows)}" if rows else f"no model named {name!r}"

    def _names_hint(self) -> str:
        names = [r["name"] for r in self.names()]
        return f"names: {', '.join(names)}" if names else "the registry is empty; add one with dlforge registry add"

    def _record(self, row: sqlite3.Row, aliases: dict[str, int]) -> dict[str, Any]:
        out = dict(row)
        out["metrics"] = json.loads(out["metrics"] or "{}")
        out["signature"] = json.loads(out["signature"] or "null")
        out["ref"] = f"{out['name']}@{out['version']}"
        out["folder"] = str(self.files / out["name"] / str(out["version"]))
        out["aliases"] = sorted(a for a, v in aliases.items() if v == out["version"])
        return out


def _current(conn: sqlite3.Connection, name: str, alias: str) -> int | None:
    row = conn.execute("SELECT version FROM alias_history WHERE name = ? AND alias = ? ORDER BY id DESC LIMIT 1",
                       (name, alias)).fetchone()
    return None if row is None else row[0]


def _provenance(folder: Path) -> dict[str, Any]:
    """What a version records of where it came from: the model folder's architecture, task and signature; and when
    the folder is a run's, the run's registry row (preset, config hash, data fingerprint, code revision) and its
    final metrics (eval.json)."""
    from dlforge.artifacts import read_json

    config = read_json(folder / "config.json")
    signature = read_json(folder / "signature.json") if (folder / "signature.json").is_file() else None
    facts: dict[str, Any] = {"model": config.get("model"), "signature": signature, "metrics": {},
                             "task": (signature or {}).get("task"), "run": None, "preset": None,
                             "config_hash": None, "data_fingerprint": None, "git_rev": None}
    run = folder.parent
    if folder.name != "model" or not is_run_dir(run):
        return facts
    facts["run"] = run.name
    row = RunRegistry(run.parent).get(run.name) if (run.parent / REGISTRY_FILE).is_file() else None
    if row:
        facts.update({k: row.get(k) for k in ("preset", "config_hash", "data_fingerprint", "git_rev")})
        facts["metrics"] = {k: v for k, v in row["metrics"].items() if isinstance(v, (int, float))}
    evaluated = read_json(run / "eval.json") if (run / "eval.json").is_file() else {}
    for split in ("val", "test"):
        for key, value in (evaluated.get(split) or {}).items():
            if isinstance(value, (int, float)):
                facts["metrics"][f"{split}/{key}"] = value
    return facts
