"""`dlforge export`: a run's model as an ONNX graph, checked against PyTorch before it is kept."""

from __future__ import annotations

from pathlib import Path

import typer

from dlforge.cli.output import console, emit_json

FORMATS = ("onnx",)


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)


def export_cmd(
    run: str = typer.Argument(..., help="a finished run (folder, name or 'latest')"),
    fmt: str = typer.Option("onnx", "--format", help="onnx"),
    out: Path = typer.Option(None, "--out", help="the folder to write model.onnx and export.json to (default: "
                                                  "RUN/onnx)"),
    as_json: bool = typer.Option(False, "--json", help="print export.json"),
) -> None:
    """Export a run's model: `dlforge export latest --format onnx`. The graph is run by onnxruntime on held-out
    inputs at two batch sizes and refused when it differs from PyTorch by more than 1e-4."""
    from dlforge.errors import DlforgeError
    from dlforge.paths import output_folder

    if fmt not in FORMATS:
        raise DlforgeError(f"--format: {fmt!r} is not an export format; expected one of {', '.join(FORMATS)}")
    if out is not None:
        output_folder(out, "the folder to write the export to (--out)")
    from dlforge.runs.rundir import resolve_run

    run_path = resolve_run(run)  # a missing run fails before torch loads
    from dlforge.deploy.onnx_run import export_run

    folder, report = export_run(run_path, out)
    if as_json:
        emit_json({"out": str(folder), **report})
        return
    checks = ", ".join(f"{c['shapes']} {c['max_abs_diff']:.2g}" for c in report["checks"])
    console.print(f"{report['model']} exported to {folder / report['file']} (opset {report['opset']}); largest "
                  f"difference from PyTorch {report['max_abs_diff']:.2g} (tolerance {report['tolerance']:g}) on "
                  f"held-out inputs: {checks}", soft_wrap=True)
