"""`dlforge runs list|show|compare|open|rm|clean`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from dlforge.cli.output import console, emit_json, metrics_table, table

app = typer.Typer(no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]})


@app.command("list")
def list_cmd(runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"), as_json: bool = typer.Option(False, "--json")):
    """Runs recorded in the run registry, newest first."""
    from dlforge.paths import existing_dir, exists
    from dlforge.runs.history import list_runs

    if exists(runs_dir):  # none yet is an empty list; a file is a mistake
        existing_dir(runs_dir, "the folder of runs (--runs-dir)")

    rows = list_runs(runs_dir)
    if as_json:
        emit_json(rows)
        return
    keys = ["name", "status", "preset", "config_hash", "git_rev"]
    table(f"runs in {runs_dir}", [*keys, "headline"], [[r.get(k) for k in keys] + [r["headline"]] for r in rows],
          keep=("name",))


@app.command("show")
def show_cmd(run: str = typer.Argument(...), runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
             as_json: bool = typer.Option(False, "--json")):
    """One run: its registry record and final metrics."""
    from dlforge.runs.history import show_run

    record = show_run(run, runs_dir)
    if as_json:
        emit_json(record)
        return
    for k in ("name", "run_dir", "status", "preset", "config_hash", "data_fingerprint", "git_rev"):
        console.print(f"{k:>16}: {record.get(k)}", soft_wrap=True)
    if record.get("eval"):
        metrics_table("final metrics", {s: m for s, m in record["eval"].items() if isinstance(m, dict)})


@app.command("compare")
def compare_cmd(runs: list[str] = typer.Argument(..., help="two or more runs"),
                runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
                out: Path = typer.Option(None, "--out", help="PNG of the overlaid curves"),
                as_json: bool = typer.Option(False, "--json")):
    """A table of final metrics side by side, and one PNG with the curves overlaid."""
    from dlforge.paths import output_file
    from dlforge.runs.history import compare_runs

    if out is not None:
        output_file(out, "the PNG of the curves (--out)", suffixes=(".png",), parents=True)

    result = compare_runs(runs, runs_dir, out)
    if as_json:
        emit_json(result)
        return
    names = [r["name"] for r in result["runs"]]
    metrics = sorted({k for r in result["runs"] for k in r["metrics"]})
    table("compare", ["metric", *names], [[m, *[r["metrics"].get(m) for r in result["runs"]]] for m in metrics],
          keep=tuple(names))
    console.print(f"curves: {result['plot']}", soft_wrap=True)


@app.command("open")
def open_cmd(run: str = typer.Argument(..., help="run folder, name or 'latest'"),
             runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
             as_json: bool = typer.Option(False, "--json", help="print the paths as JSON; open nothing")):
    """Print the paths of a run's model card and plots, and open its plots folder with the system's viewer when
    there is a display (xdg-open, open); on a headless machine it only prints."""
    from dlforge.runs.history import open_run

    files = open_run(run, runs_dir, viewer=not as_json)
    if as_json:
        emit_json(files)
        return
    console.print(f"run: {files['run_dir']}\ncard: {files['card'] or '(none: the run did not finish)'}", soft_wrap=True)
    for plot in files["plots"]:
        console.print(f"plot: {plot}", soft_wrap=True)
    if files["opened"]:
        console.print(f"opened {files['opened']}", soft_wrap=True)


@app.command("rm")
def rm_cmd(runs: list[str] = typer.Argument(..., help="runs to remove: folder, name, latest or latest:NAME"),
           runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
           force: bool = typer.Option(False, "--force", "-f", help="remove a run recorded as running too"),
           as_json: bool = typer.Option(False, "--json")):
    """Remove runs: each one's folder and its row in the run registry, without a question (the names are the
    confirmation, as with `docker rm` and `git rm`). A running run is refused unless --force."""
    from dlforge.runs.history import remove_runs

    _report_removed(remove_runs(runs, runs_dir, force), as_json)


@app.command("clean")
def clean_cmd(failed: bool = typer.Option(False, "--failed", help="remove the failed and interrupted runs"),
              runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
              dry_run: bool = typer.Option(False, "--dry-run", "-n", help="list what would be removed; remove nothing"),
              yes: bool = typer.Option(False, "--yes", "-y", help="do not ask (needed when stdin is no terminal)"),
              as_json: bool = typer.Option(False, "--json")):
    """Remove the runs that failed or were interrupted (folder and registry row). On a terminal it lists them and
    asks first; elsewhere it needs --yes, as `docker container prune` needs --force."""
    from dlforge.errors import ConfigError
    from dlforge.runs.history import cleanable_runs, remove_runs

    if not failed:
        raise ConfigError("runs clean: say what to remove: --failed (the failed and interrupted runs)")
    runs = cleanable_runs(runs_dir)
    if dry_run or not runs:
        _report_removed(runs, as_json, "would remove" if dry_run else "removed")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise ConfigError(f"runs clean: {len(runs)} runs to remove and no terminal to ask; add --yes (or see "
                              f"them first with --dry-run)")
        _report_removed(runs, False, "to remove")
        typer.confirm(f"Remove these {len(runs)} runs?", abort=True)
    _report_removed(remove_runs([r["name"] for r in runs], runs_dir), as_json)


def _report_removed(runs: list[dict], as_json: bool, verb: str = "removed") -> None:
    if as_json:
        emit_json(runs)
        return
    for r in runs:
        console.print(f"{verb} {r['name']} ({r['status'] or 'not in the registry'})", soft_wrap=True, highlight=False)
    if not runs:
        console.print("no runs to remove")
