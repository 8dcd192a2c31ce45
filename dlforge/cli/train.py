"""`dlforge train`, `dlforge eval`, `dlforge predict`."""

from __future__ import annotations

from pathlib import Path

import typer

from dlforge.cli.output import console, emit_json, metrics_table, prediction_table


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
    from dlforge.config import QUICK_OVERRIDES, load_config
    from dlforge.errors import ConfigError
    from dlforge.paths import output_folder
    from dlforge.runs.rundir import resolve_run

    overrides = list(overrides or [])
    if resume is None and preset is None:
        raise ConfigError("train: give a preset or YAML file, or --resume RUN")
    if resume is not None and preset is not None:
        if "=" not in preset:
            raise ConfigError(f"train: --resume continues a run with its saved config; drop the preset {preset!r}")
        overrides = [preset, *overrides]
        preset = None
    if run_dir is not None:
        output_folder(run_dir, "the run folder (--run-dir)")
    if resume is not None:
        resume = resolve_run(resume, finished=False)  # `latest`: the newest run, finished or not
    if quick:  # the short run first: the user's overrides win
        overrides = [*QUICK_OVERRIDES, *overrides]
    config = load_config(preset, overrides) if resume is None else None  # a config error comes before torch loads
    from dlforge.api import train

    result = train(config, overrides if resume is not None else None, run_dir=run_dir, resume=resume,
                   allow_changes=allow_changes)
    if not result.main_process:  # another process of a distributed run: the first one reports
        raise typer.Exit(result.exit_code)
    summary = {"run_dir": str(result.run_dir), "status": result.status, "stop_reason": result.stop_reason,
               "steps": result.steps, "wall_s": round(result.wall_s, 2), "fit_s": round(result.fit_s, 2),
               "metrics": result.metrics, "weights": result.weights, "eval_note": result.eval_note}
    if as_json:
        emit_json(summary)
        raise typer.Exit(result.exit_code)
    if result.metrics:
        console.print(f"{result.run_dir.name}: {result.steps} steps in {result.wall_s:.1f} s ({result.stop_reason}); "
                      f"metrics of the {result.weights_text}:", soft_wrap=True)
        metrics_table("", result.metrics)
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
    backend: str = typer.Option("torch", "--backend", help="torch, or onnxruntime: the run's ONNX export (`dlforge "
                                                           "export RUN`), its metrics without the loss"),
    export: Path = typer.Option(None, "--export", help="onnxruntime: the export folder to run (default RUN/onnx; "
                                                        "e.g. RUN/onnx-int8-static from `dlforge quantize`)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Evaluate a run's final model on a split of its data."""
    from dlforge.runs.rundir import resolve_run

    run_path = resolve_run(run)  # `latest` or a name: report the run it is
    from dlforge.api import evaluate

    metrics = evaluate(run_path, split, backend, export)
    if as_json:
        emit_json({"run": str(run_path), "split": split, "backend": backend, "metrics": metrics})
    else:
        metrics_table(f"{run_path}: {split}", {split: metrics})


def predict_cmd(
    run: str = typer.Argument(..., help="run folder, name or 'latest'"),
    input_path: Path = typer.Argument(..., help="what the run's model reads (its model card names it): a CSV or "
                                                "Parquet file of rows, image files, a CSV of a series' latest values, "
                                                "a text file of texts, prompts or sentences (one per line) or .jsonl"),
    out: Path = typer.Option(None, "--out", help="write predictions to this CSV"),
    top_k: int = typer.Option(3, "--top-k", min=1, help="the table shows each input's k likeliest classes (--json "
                                                         "and --out keep every class's probability)"),
    backend: str = typer.Option("torch", "--backend", help="torch, or onnxruntime: the run's ONNX export (`dlforge "
                                                           "export RUN`)"),
    export: Path = typer.Option(None, "--export", help="onnxruntime: the export folder to run (default RUN/onnx)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Predict for new inputs: labels and probabilities, values, forecasts, continuations or translations."""
    from dlforge.paths import existing, output_file

    existing(input_path, "a file or folder of inputs to predict")
    if out is not None:
        output_file(out, "the CSV file to write the predictions to (--out)")
    from dlforge.api import predict

    rows = predict(run, input_path, out, backend, export)
    if as_json:
        emit_json(rows)
    elif out is not None:
        console.print(f"{len(rows)} predictions written to {out}")
    else:
        prediction_table(f"predictions for {input_path}", rows, top_k)
