"""`dlforge monitor RUN --reference train --current LOG|FILE [--model ID] [--since ...] [--out report.html]
[--json]`: data, representation and prediction drift of what a model sees (dlforge.deploy.monitor)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import typer

from dlforge.cli.output import console, emit_json


def register(app: typer.Typer) -> None:
    app.command("monitor")(monitor_cmd)


def monitor_cmd(
    run: str = typer.Argument(..., help="the trained run whose data is the reference (folder, name or 'latest')"),
    current: Path = typer.Option(..., "--current", help="a request store (dlforge serve --store FILE), or a file: "
                                                        "CSV/Parquet rows, an image or folder of images, texts "
                                                        "(.txt, .jsonl), embeddings (.npy); or train, val, test: "
                                                        "another split of the run"),
    reference: str = typer.Option("train", "--reference", help="the run's split to compare with: train, val or test"),
    model: str = typer.Option(None, "--model", help="the model id in the store (default: the run folder's name)"),
    since: str = typer.Option(None, "--since", help="only requests since then: 30m, 2h, 1d ago, or a time "
                                                    "'2026-12-03 14:00' (local), or Unix seconds"),
    out: Path = typer.Option(None, "--out", help="also write a self-contained HTML report here"),
    permutations: int = typer.Option(500, "--permutations", min=10, help="permutations of the MMD test"),
    seed: int = typer.Option(0, "--seed", help="seeds the MMD test's permutations"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="where runs are found by name"),
    as_json: bool = typer.Option(False, "--json", help="print the whole report as JSON"),
) -> None:
    """Compare what a model sees now with a split of its training data: per-feature drift (PSI, KS, Wasserstein,
    chi-squared, Jensen-Shannon; the test Evidently's rule picks), MMD on embeddings for image and text models,
    prediction drift, and a warning under 100 rows. The exit code is 0 whether or not drift is found (read the
    verdict, or `drift` in --json); 2 for bad input."""
    from dlforge.errors import DlforgeError
    from dlforge.paths import existing, output_file
    from dlforge.runs.rundir import resolve_run

    if reference not in ("train", "val", "test"):
        raise DlforgeError(f"--reference: {reference!r}; expected train, val or test")
    start = parse_since(since) if since is not None else None
    run_path = resolve_run(run, runs_dir)  # wrong paths are said before torch loads
    if str(current) not in ("train", "val", "test") or current.exists():
        existing(current, "a request store, a table, images, texts or a .npy of embeddings (--current)")
    if out is not None:
        output_file(out, "the HTML report (--out)", suffixes=(".html", ".htm"), parents=True)
    from dlforge.deploy.monitor import monitor

    report = monitor(run_path, reference, current, model, start, permutations, seed, runs_dir, out)
    if as_json:
        emit_json(report)
        return
    console.print(f"{report['model']}: {report['current']['n']} current rows ({report['current']['source']}) "
                  f"against {report['reference']['n']} of {reference}", soft_wrap=True)
    for name, f in report["features"].items():
        console.print(f"  {name}: {f['test']} {f['score']:.4g} -> {'DRIFT' if f['drift'] else 'ok'}", soft_wrap=True)
    for warning in report["warnings"]:
        console.print(f"warning: {warning}", soft_wrap=True)
    console.print(report["verdict"], soft_wrap=True)
    if out is not None:
        console.print(f"report: {report['html']}", soft_wrap=True)


def parse_since(text: str) -> float:
    """Unix seconds of --since: a duration ago (30m, 2h, 1d, 45s), a local time (YYYY-MM-DD[ HH:MM[:SS]]) or a
    number of Unix seconds."""
    from dlforge.errors import DlforgeError

    text = text.strip()
    ago = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", text)
    if ago:
        return time.time() - float(ago.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[ago.group(2)]
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    for layout in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            return time.mktime(time.strptime(text, layout))
        except ValueError:
            continue
    raise DlforgeError(f"--since: {text!r}; expected a duration ago (30m, 2h, 1d), a time 'YYYY-MM-DD HH:MM' or "
                       "Unix seconds")
