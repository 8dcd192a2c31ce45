"""`dlforge export`: a run's model as an ONNX graph, checked against PyTorch before it is kept; `dlforge quantize`:
that graph in int8, its effect measured."""

from __future__ import annotations

from pathlib import Path

import typer

from dlforge.cli.output import console, emit_json

FORMATS = ("onnx",)


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
    app.command("quantize")(quantize_cmd)


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


def quantize_cmd(
    run: str = typer.Argument(..., help="a run exported with `dlforge export` (folder, name or 'latest')"),
    mode: str = typer.Option("dynamic", "--mode", help="dynamic (int8 weights) or static (int8 weights and "
                                                        "activations, calibrated on training batches)"),
    calibration_batches: int = typer.Option(8, "--calibration-batches", help="static: training batches of 32 that "
                                                                             "set the activations' ranges"),
    out: Path = typer.Option(None, "--out", help="the folder to write to (default: RUN/onnx-int8-MODE)"),
    rounds: int = typer.Option(10, "--rounds", min=1, help="paired rounds of the latency measurement"),
    backend: str = typer.Option("onnxruntime", "--backend", help="onnxruntime (the run's export), or torch "
                                                                 "(torch.ao's dynamic int8, where it works)"),
    as_json: bool = typer.Option(False, "--json", help="print quantize.json"),
) -> None:
    """Quantize a run's ONNX export to int8 with onnxruntime: `dlforge quantize latest --mode static`. Reports the
    test metrics, file size and latency at batch 1 and 64 of fp32 and int8, side by side."""
    from dlforge.errors import DlforgeError
    from dlforge.paths import output_folder

    if mode not in ("dynamic", "static"):
        raise DlforgeError(f"--mode: {mode!r} is not a quantization mode; expected dynamic or static")
    if backend not in ("onnxruntime", "torch"):
        raise DlforgeError(f"--backend: {backend!r}; expected onnxruntime or torch")
    if backend == "torch" and mode != "dynamic":
        raise DlforgeError("--backend torch: PyTorch's int8 here is dynamic only; use --mode dynamic, or "
                           "--backend onnxruntime for static int8")
    if out is not None:
        output_folder(out, "the folder to write the quantized model to (--out)")
    from dlforge.runs.rundir import resolve_run

    run_path = resolve_run(run)
    if backend == "torch":
        from dlforge.deploy.quantize_torch import quantize_torch

        folder, report = quantize_torch(run_path, rounds=rounds)
    else:
        from dlforge.deploy.quantize import quantize_run

        folder, report = quantize_run(run_path, mode, calibration_batches, out, rounds=rounds)
    if as_json:
        emit_json({"out": str(folder), **report})
        return
    size = report["size"]
    where = f"report in {folder}" if backend == "torch" else f"written to {folder / 'model.onnx'}"
    console.print(f"{report['model']} int8 ({mode}, {backend}) {where}: {size['int8_bytes']:,} bytes "
                  f"against {size['fp32_bytes']:,} ({size['ratio']:.2f}x smaller)", soft_wrap=True)
    before, after = report["metrics"]["fp32"], report["metrics"]["int8"]
    console.print("test metrics, fp32 -> int8: " + ", ".join(f"{k} {before[k]:.4f} -> {after[k]:.4f}"
                                                             for k in after if k in before), soft_wrap=True)
    for key, row in report["latency"].items():
        console.print(f"{key}: fp32 {row['fp32_ms']:.3g} ms, int8 {row['int8_ms']:.3g} ms "
                      f"(int8 {row['speedup_median']:.2f}x as fast)", soft_wrap=True)
    for note in report["notes"]:
        console.print(f"note: {note}", soft_wrap=True)
