"""`dlforge registry add|list|show|alias|rollback|history`: versions of trained models and their aliases
(dlforge.deploy.model_registry)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer

from dlforge.cli.output import console, emit_json, metrics_table, table

app = typer.Typer(no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]})
RUNS_DIR = typer.Option(Path("runs"), "--runs-dir", help="the runs folder (the registry is its models.db)")
JSON = typer.Option(False, "--json", help="print the result as JSON")


def _check_dir(runs_dir: Path) -> None:
    from dlforge.paths import existing_dir, exists

    if exists(runs_dir):  # none yet is an empty registry; a file is a mistake
        existing_dir(runs_dir, "the runs folder (--runs-dir)")


def _registry(runs_dir: Path, create: bool = False):
    """The registry of `runs_dir` (a missing one is an error unless `create`), the folder checked first."""
    _check_dir(runs_dir)
    from dlforge.deploy.model_registry import ModelRegistry

    return ModelRegistry(runs_dir, create=create)


def _when(at: float | None) -> str:
    return "" if at is None else datetime.fromtimestamp(at).isoformat(timespec="seconds")


@app.command("add")
def add_cmd(source: str = typer.Argument(..., help="a finished run (folder, name or 'latest') or a model folder"),
            name: str = typer.Option(..., "--name", help="the model's name in the registry"),
            alias: list[str] = typer.Option(None, "--alias", help="point this alias at the new version (repeatable)"),
            description: str = typer.Option(None, "--description"),
            runs_dir: Path = RUNS_DIR, as_json: bool = JSON):
    """Add a new, immutable version NAME@N: the model folder copied into the registry, with where it came from."""
    from dlforge.deploy.model_registry import check_alias, check_name
    from dlforge.runs.rundir import model_dir

    check_name(name)
    for a in alias or []:  # a bad name, alias or source is refused before anything is written
        check_alias(a)
    folder = model_dir(source, runs_dir)
    registry = _registry(runs_dir, create=True)
    record = registry.add(folder, name, description)
    for a in alias or []:
        registry.set_alias(name, a, record["version"], reason="added with the version")
    record = registry.version(name, record["version"])
    if as_json:
        emit_json(record)
        return
    console.print(f"{record['ref']}: {record['model']} ({record['task']}) from {record['run'] or record['source']}"
                  + (f"; aliases {', '.join(record['aliases'])}" if record["aliases"] else ""), soft_wrap=True)
    console.print(f"  files: {record['folder']} (manifest SHA-256 {record['manifest_sha256'][:16]}..)",
                  soft_wrap=True)


@app.command("list")
def list_cmd(name: str = typer.Argument(None, help="list this name's versions (default: every name)"),
             runs_dir: Path = RUNS_DIR, as_json: bool = JSON):
    """The registered names, or one name's versions, newest first."""
    from dlforge.deploy.model_registry import DB_FILE

    _check_dir(runs_dir)
    if name is None:
        rows = _registry(runs_dir).names() if (runs_dir / DB_FILE).is_file() else []
        if as_json:
            emit_json(rows)
            return
        table(f"models in {runs_dir / DB_FILE}", ["name", "versions", "latest", "aliases", "updated"],
              [[r["name"], r["versions"], r["latest"], ", ".join(f"{a}={v}" for a, v in r["aliases"].items()),
                _when(r["updated"])] for r in rows], keep=("name",))
        return
    registry = _registry(runs_dir)
    rows = registry.versions(name)
    if not rows:
        from dlforge.deploy.model_registry import RegistryError

        raise RegistryError(f"no model named {name!r} in {registry.path}")
    if as_json:
        emit_json(rows)
        return
    table(f"versions of {name}", ["version", "aliases", "model", "task", "run", "created"],
          [[r["version"], ", ".join(r["aliases"]), r["model"], r["task"], r["run"], _when(r["created"])]
           for r in rows], keep=("version",))


@app.command("show")
def show_cmd(ref: str = typer.Argument(..., help="NAME@VERSION, NAME@ALIAS or NAME (its latest version)"),
             runs_dir: Path = RUNS_DIR, as_json: bool = JSON):
    """One version: where it came from, its metrics and signature; its files are checked."""
    record = _registry(runs_dir).resolve(ref)
    if as_json:
        emit_json(record)
        return
    for k in ("ref", "aliases", "model", "task", "run", "preset", "config_hash", "data_fingerprint", "git_rev",
              "source", "folder", "manifest_sha256", "description"):
        value = ", ".join(record[k]) if k == "aliases" else record[k]
        console.print(f"{k:>16}: {value}", soft_wrap=True)
    console.print(f"{'created':>16}: {_when(record['created'])}")
    if record["metrics"]:
        splits: dict[str, dict[str, float]] = {}
        for key, value in record["metrics"].items():
            split, _, metric = key.rpartition("/")
            splits.setdefault(split or "-", {})[metric] = value
        metrics_table("metrics", splits)


@app.command("alias")
def alias_cmd(name: str = typer.Argument(...), alias: str = typer.Argument(...),
              version: int = typer.Argument(None, help="the version to point at (omit with --delete)"),
              delete: bool = typer.Option(False, "--delete", help="remove the alias"),
              runs_dir: Path = RUNS_DIR, as_json: bool = JSON):
    """Point NAME@ALIAS at a version (a move is recorded in the alias history; nothing is ever overwritten)."""
    from dlforge.errors import DlforgeError

    if delete == (version is not None):
        raise DlforgeError("registry alias: give a VERSION to point the alias at, or --delete to remove it")
    event = _registry(runs_dir).set_alias(name, alias, None if delete else version)
    _print_move(event, as_json)


@app.command("rollback")
def rollback_cmd(name: str = typer.Argument(...), alias: str = typer.Argument(...),
                 runs_dir: Path = RUNS_DIR, as_json: bool = JSON):
    """Move NAME@ALIAS back to the version it named before its current one."""
    _print_move(_registry(runs_dir).rollback(name, alias), as_json)


@app.command("history")
def history_cmd(name: str = typer.Argument(...),
                alias: str = typer.Option(None, "--alias", help="only this alias's moves"),
                at: str = typer.Option(None, "--at", help="say which version each alias named at this time "
                                                          "(ISO 8601, or seconds since the epoch)"),
                runs_dir: Path = RUNS_DIR, as_json: bool = JSON):
    """Every move of NAME's aliases, oldest first; or, with --at, which version each alias named then."""
    from dlforge.deploy.model_registry import check_name, parse_time

    registry = _registry(runs_dir)
    check_name(name)
    if at is not None:
        when = parse_time(at)
        found = registry.aliases_at(name, when, alias)
        if as_json:
            emit_json({"name": name, "at": when, "aliases": found})
            return
        for a, v in found.items():
            console.print(f"{name}@{a} at {_when(when)}: " + (f"version {v}" if v is not None else "no version"))
        return
    events = registry.history(name, alias)
    if as_json:
        emit_json(events)
        return
    table(f"alias history of {name}", ["at", "alias", "version", "previous", "reason"],
          [[_when(e["at"]), e["alias"], e["version"] if e["version"] is not None else "(removed)", e["previous"],
            e["reason"]] for e in events], keep=("at",))


def _print_move(event: dict, as_json: bool) -> None:
    if as_json:
        emit_json(event)
        return
    target = f"version {event['version']}" if event["version"] is not None else "nothing (removed)"
    if event["unchanged"]:
        console.print(f"{event['name']}@{event['alias']} already names {target}")
    else:
        console.print(f"{event['name']}@{event['alias']}: {event['previous'] or '-'} -> {target}")
