"""int8 quantization of a run's ONNX export through onnxruntime's quantizer, and what it really changed.

    folder, report = quantize_run("runs/fashion-resnet-...", mode="static")   # RUN/onnx-int8-static/

`dynamic`: the weights of MatMul, Gemm, Conv, LSTM, GRU and Gather (embedding tables) stored as int8 per output
channel, activations quantized on the fly (`quantize_dynamic`; per-tensor weights cost MiniLM's sentence embeddings
a mean cosine of 0.959 to fp32, per-channel 0.993). `static`: weights and activations int8 in QDQ form, the
activations' ranges calibrated on the first `calibration_batches` batches of the run's training split
(`quantize_static`, MinMax, per-channel weights).
The report, written beside the graph as quantize.json, states the measured effect, side by side with the fp32
export in the same runtime: every test metric before and after, the file size before and after, and the latency at
batch 1 and batch 64 (paired, interleaved rounds on held-out inputs), with a sentence when int8 is slower.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dlforge.artifacts import load_trained, write_folder, write_json
from dlforge.config import load_config
from dlforge.data.dataset import build_data
from dlforge.deploy.latency import paired_latency
from dlforge.deploy.onnx_export import FORMAT, error_reason, quiet_loggers, read_export, require_onnx
from dlforge.deploy.onnx_run import OnnxModel, batch_of, replaceable
from dlforge.errors import DlforgeError
from dlforge.eval.evaluate import evaluate_model
from dlforge.registry import create_task
from dlforge.runs.rundir import resolve_run

MODES = ("dynamic", "static")
LATENCY_BATCHES = (1, 64)
CALIBRATION_BATCH = 32
# What dynamic int8 quantizes: onnxruntime's default list but ONNX's Attention (opset 23), which its quantizer turns
# into a QAttention node that onnxruntime 1.32 itself refuses to load ("Unrecognized attribute: is_causal").
DYNAMIC_OPS = ("MatMul", "Gemm", "Conv", "LSTM", "GRU", "Gather")


class QuantizeError(DlforgeError):
    """A graph onnxruntime's quantizer can't quantize, said in one line."""


def quantize_run(run: str | Path, mode: str = "dynamic", calibration_batches: int = 8, out: str | Path | None = None,
                 runs_dir: str | Path = "runs", rounds: int = 10, calls: int = 3) -> tuple[Path, dict[str, Any]]:
    """Quantize RUN/onnx (made by `dlforge export`) to int8 into `out` (default RUN/onnx-int8-MODE); returns the
    folder and its quantize.json."""
    if mode not in MODES:
        raise DlforgeError(f"--mode: {mode!r} is not a quantization mode; expected one of {', '.join(MODES)}")
    if calibration_batches < 1:
        raise DlforgeError(f"--calibration-batches: {calibration_batches}; expected 1 or more")
    require_onnx()
    run_path = resolve_run(str(run), runs_dir)
    source = run_path / "onnx"
    if not (source / "manifest.json").is_file():
        raise DlforgeError(f"{run_path.name}: no ONNX export at {source} to quantize; run `dlforge export {run}` first")
    export = read_export(source)
    torch_model = load_trained(run_path)
    fp32 = OnnxModel(source, torch_model)
    folder = Path(out) if out is not None else run_path / f"onnx-int8-{mode}"
    replaceable(folder)
    data = build_data(load_config(run_path / "config.yaml"))
    test = data.split("test") if data.test is not None else data.split("val")
    names = [spec["name"] for spec in export["inputs"]]
    report: dict[str, Any] = {}

    def fill(tmp: Path) -> None:
        _quantize(source / "model.onnx", tmp / "model.onnx", mode, data.train, names, calibration_batches,
                  torch_model.registry_name)
        write_json(tmp / "export.json", {**export, "quantization": {"mode": mode, "type": "int8"}})
        int8 = OnnxModel(tmp, torch_model, verify=False)
        task = create_task(data.info.get("task"))
        loss = getattr(torch_model.config, "loss", "")
        before = evaluate_model(fp32, test, task.metrics(data.info, loss, "test"))
        after = evaluate_model(int8, test, task.metrics(data.info, loss, "test"))
        size = {"fp32_bytes": (source / "model.onnx").stat().st_size, "int8_bytes": (tmp / "model.onnx").stat().st_size}
        size["ratio"] = size["fp32_bytes"] / size["int8_bytes"]
        sizes = sorted({min(n, len(test)) for n in LATENCY_BATCHES})  # a small test split: its whole size
        latency = {f"batch {n}": _latency(fp32, int8, batch_of(test, range(n), names), rounds, calls) for n in sizes}
        vnni = _has_vnni()
        report.update({"mode": mode, "run": run_path.name, "model": torch_model.registry_name,
                       "calibration": {"split": "train", "batches": calibration_batches,
                                       "batch_size": CALIBRATION_BATCH} if mode == "static" else None,
                       "metrics": {"fp32": before, "int8": after}, "size": size, "latency": latency,
                       "cpu_int8_dot_product": vnni, "notes": _notes(latency, vnni)})
        write_json(tmp / "quantize.json", report)

    write_folder(folder, FORMAT, fill)
    return folder, report


def _quantize(src: Path, dst: Path, mode: str, train: Any, names: list[str], batches: int, name: str) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    class Calibration(CalibrationDataReader):
        """The first `batches` training batches, as the graph's inputs."""

        def __init__(self) -> None:
            n = min(len(train), batches * CALIBRATION_BATCH)
            self.feeds = iter([{k: v.numpy() for k, v in batch_of(train, range(i, min(i + CALIBRATION_BATCH, n)),
                                                                   names).items()}
                               for i in range(0, n, CALIBRATION_BATCH)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    try:
        with quiet_loggers(""):  # the quantizer's advice to pre-process, logged on the root logger at every call
            if mode == "dynamic":
                quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=list(DYNAMIC_OPS),
                                 per_channel=True)
            else:
                quantize_static(src, dst, Calibration(), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    except Exception as exc:  # the quantizer's own errors: an op or a shape it does not handle
        raise QuantizeError(f"onnxruntime's quantizer could not quantize {name} ({mode}): {error_reason(exc)}") from exc


def _latency(fp32: OnnxModel, int8: OnnxModel, batch: dict, rounds: int, calls: int) -> dict[str, Any]:
    """Each graph's latency in onnxruntime on `batch` (`paired_latency`: fp32_ms, int8_ms, the speedup)."""
    feeds = {k: v.numpy() for k, v in batch.items()}
    runs = ("fp32", lambda: fp32.session.run(None, feeds)), ("int8", lambda: int8.session.run(None, feeds))
    return paired_latency(*runs, len(next(iter(feeds.values()))), rounds, calls)


def _has_vnni() -> bool | None:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return "avx512_vnni" in flags or "avx_vnni" in flags


def _notes(latency: dict[str, dict[str, Any]], vnni: bool | None) -> list[str]:
    notes = []
    for key, row in latency.items():
        if row["speedup_median"] < 1:
            why = ("this CPU has VNNI int8 dot products, but the quantize and dequantize steps around each int8 op "
                   "cost more than they save at this size" if vnni else
                   "this CPU has no VNNI int8 dot products, so int8 matmuls are not faster than fp32 ones")
            notes.append(f"int8 is slower than fp32 at {key} here ({row['int8_ms']:.3g} ms against "
                         f"{row['fp32_ms']:.3g} ms): {why}")
    return notes


def read_report(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "quantize.json").read_text("utf-8"))
