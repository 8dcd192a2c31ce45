"""`dlforge lr-find`: the learning-rate range test on a preset."""

from __future__ import annotations

import typer

from dlforge.cli.output import console, emit_json, table


def register(app: typer.Typer) -> None:
    app.command("lr-find")(lr_find_cmd)


def lr_find_cmd(
    preset: str = typer.Argument(..., help="preset name (see `dlforge presets`) or a YAML file"),
    overrides: list[str] = typer.Argument(None, help="dotted overrides, e.g. train.batch_size=64"),
    start: float = typer.Option(1e-7, "--start", help="the first learning rate"),
    end: float = typer.Option(10.0, "--end", help="the last learning rate, if the loss has not diverged before"),
    steps: int = typer.Option(100, "--steps", help="training steps, one per rate, spaced exponentially"),
    as_json: bool = typer.Option(False, "--json", help="the suggestion, the curve and the plot's path as JSON"),
) -> None:
    """Which learning rate to train with: the LR range test (rates growing from --start to --end, one step each,
    until the loss diverges) suggests where the smoothed loss falls fastest, and draws the curve in
    <runs_dir>/lr-find-<name>.png. Nothing is trained or saved as a run."""
    from dlforge.config import load_config

    config = load_config(preset, list(overrides or []))  # a config error comes before torch loads
    from dlforge.api import lr_find

    result = lr_find(config, None, start, end, steps)
    if as_json:
        emit_json(result)
        return
    keys = ["suggestion", "min_loss_lr", "diverged_at", "steps"]
    console.print(f"learning-rate range test of {preset}, {result['start']:g} to {result['end']:g}:", soft_wrap=True,
                  highlight=False, markup=False)
    table("", ["", "value"], [[k, result[k]] for k in keys])
    if result["suggestion"] is not None:
        console.print(f"train with: dlforge train {preset} train.lr={result['suggestion']:.2g}", soft_wrap=True,
                      highlight=False, markup=False)
    console.print(f"plot: {result['plot']}", soft_wrap=True, highlight=False, markup=False)
