"""`dlforge train`, `dlforge eval`, `dlforge predict`."""

from __future__ import annotations

from pathlib import Path

import typer

from dlforge.cli.output import console, emit_json, metrics_table, table


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("eval")(eval_cmd)
    app.command("predict")(predict_cmd)


def train_cmd(
    preset: str = typer.Argument(None, help="preset name (see `dlforge presets`) or a YAML file"),
    overrides: list[str] = typer.Argument(None, help="dotted overrides, e.g. train.lr=3e-3 model.hidden=[256,256]"),
    run_dir: Path = typer.Option(None, "--run-dir", help="write the run here instead of runs/<name>-<time>"),
    resume: str = typer.Option(None, "--resume", help="continue a run (folder, name or 'latest') from its checkpoint"),
    allow_changes: bool = typer.Option(False, "--allow-changes", help="with --resume: accept overrides that change "
                                       "the data or the schedule (train.max_steps, train.lr, ...)"),
    quick: bool = typer.Option(False, "--quick", help="a short run to see it work end to end: a few steps, evaluated "
                               "at the end on a few batches (dlforge.config.QUICK_OVERRIDES; your overrides win)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Train a model: `dlforge train breast-cancer-mlp train.lr=3e-3`."""
    from dlforge.api import train
    from dlforge.errors import ConfigError

    overrides = list(overrides or [])
    if resume is None and preset is None:
        raise ConfigError("train: give a preset or YAML file, or --resume RUN")
    if resume is not None and preset is not None:
        if "=" not in preset:
            raise ConfigError(f"train: --resume continues a run with its saved config; drop the preset {preset!r}")
        overrides = [preset, *overrides]
        preset = None
    result = train(preset, overrides, run_dir=run_dir, resume=resume, allow_changes=allow_changes, quick=quick)
    if result.run_dir is None:
        return
    summary = {"run_dir": str(result.run_dir), "status": result.status, "stop_reason": result.stop_reason,
               "steps": result.steps, "wall_s": round(result.wall_s, 2), "metrics": result.metrics,
               "eval_note": result.eval_note}
    if as_json:
        emit_json(summary)
        raise typer.Exit(result.exit_code)
    if result.metrics:
        console.print(f"{result.run_dir.name}: {result.steps} steps in {result.wall_s:.1f} s ({result.stop_reason})")
        metrics_table("metrics", result.metrics)
        if result.eval_note:
            console.print(f"note: {result.eval_note}", soft_wrap=True)
    if result.status == "interrupted":
        console.print(f"interrupted at step {result.steps}; continue with: dlforge train --resume {result.run_dir}",
                      soft_wrap=True)  # one line whatever the terminal width: it is a command to copy
    console.print(f"run: {result.run_dir}", soft_wrap=True)
    raise typer.Exit(result.exit_code)


def eval_cmd(
    run: str = typer.Argument(..., help="run folder, name or 'latest'"),
    split: str = typer.Option("test", "--split", help="train, val or test"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Evaluate a run's final model on a split of its data."""
    from dlforge.api import evaluate
    from dlforge.runs.rundir import resolve_run

    run_path = resolve_run(run)  # `latest` or a name: report the run it is
    metrics = evaluate(run_path, split)
    if as_json:
        emit_json({"run": str(run_path), "split": split, "metrics": metrics})
    else:
        metrics_table(f"{run_path}: {split}", {split: metrics})


def predict_cmd(
    run: str = typer.Argument(..., help="run folder, name or 'latest'"),
    input_path: Path = typer.Argument(..., help="CSV or Parquet file with the feature columns"),
    out: Path = typer.Option(None, "--out", help="write predictions to this CSV"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Predict labels and probabilities (or values) for new rows."""
    from dlforge.api import predict

    rows = predict(run, input_path, out)
    if as_json:
        emit_json(rows)
    elif out is not None:
        console.print(f"{len(rows)} predictions written to {out}")
    else:
        table(f"predictions for {input_path}", list(rows[0]) if rows else [], [list(r.values()) for r in rows])
