"""`dlforge runs list|show|compare`."""

from __future__ import annotations

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
    table(f"runs in {runs_dir}", [*keys, "headline"], [[r.get(k) for k in keys] + [r["headline"]] for r in rows])


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
        console.print(f"{k:>16}: {record.get(k)}")
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
    table("compare", ["metric", *names], [[m, *[r["metrics"].get(m) for r in result["runs"]]] for m in metrics])
    console.print(f"curves: {result['plot']}")
