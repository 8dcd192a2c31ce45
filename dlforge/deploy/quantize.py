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
from collections.abc import Iterable, Sequence
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
                quantize_dynamic_int8(src, dst)
            else:
                quantize_static(src, dst, Calibration(), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    except Exception as exc:  # the quantizer's own errors: an op or a shape it does not handle
        raise QuantizeError(f"onnxruntime's quantizer could not quantize {name} ({mode}): {error_reason(exc)}") from exc


def quantize_dynamic_int8(src: Path, dst: Path, keep_fp32: Sequence[str] = ()) -> None:
    """onnxruntime's dynamic int8 as dlforge does it: the DYNAMIC_OPS nodes but those named in `keep_fp32`, weights
    int8 per output channel."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_loggers(""):
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=list(DYNAMIC_OPS),
                         per_channel=True, nodes_to_exclude=list(keep_fp32))


def outlier_matmuls(src: Path, feeds: Iterable[dict[str, np.ndarray]], count: int) -> dict[str, float]:
    """The `count` MatMul nodes (with a constant weight) whose inputs have the widest outliers on `feeds`, each with
    the ratio max|x| / std of its input. Dynamic int8 quantizes a MatMul's input per tensor, in steps of its range /
    255: an input whose range spans many standard deviations keeps few steps for most of its values. In BERT-style
    encoders these are the feed-forward output projections (MiniLM-L6 on the Debian FAQ: 50-91, other MatMuls
    8-45)."""
    import onnx

    ort = require_onnx()
    graph = onnx.load(str(src))
    weights = {t.name for t in graph.graph.initializer}
    inputs = {}
    for node in graph.graph.node:
        if node.op_type == "MatMul" and any(i in weights for i in node.input[:2]):
            inputs.setdefault(next(i for i in node.input[:2] if i not in weights), node.name)
    if not inputs:
        return {}
    for name in inputs:  # each MatMul input as an output of the graph, to be read
        graph.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    peak = dict.fromkeys(inputs, 0.0)
    for feed in feeds:
        for name, x in zip(inputs, session.run(list(inputs), feed), strict=True):
            peak[name] = max(peak[name], float(np.abs(x).max() / max(float(x.std()), 1e-12)))
    worst = sorted(peak, key=peak.get, reverse=True)[:count]
    return {inputs[name]: round(peak[name], 1) for name in worst}


def least_harmed(src: Path, feeds: list[dict[str, np.ndarray]], candidates: int) -> dict[str, Any]:
    """The one MatMul to keep in fp32 under dynamic int8 (None where there is none; Gemm nodes are not tried, as the
    quantizer renames them): of the `candidates` with the widest input outliers
    (`outlier_matmuls`), the one whose keeping brings the graph's outputs on `feeds` closest to fp32's (relative
    squared error, summed over outputs; for unit embeddings about 2 x (1 - cosine)). Returns the node chosen
    (`keep`), and the error with each candidate kept (`errors`) and with none (`all_int8`). MiniLM-L6 on ordinary
    prose: 1 - cosine 0.0065 all int8, 0.0051 with the first block's feed-forward output kept (0.0059 the second's);
    on the Debian FAQ's blanked questions that is a dense recall@5 of 0.775, 0.800 and 0.792 (fp32 0.808)."""
    import tempfile

    from dlforge.deploy.onnx_export import ort_session

    outliers = outlier_matmuls(src, feeds, candidates)
    reference = ort_session(src)
    expected = [reference.run(None, feed) for feed in feeds]

    def error(keep: list[str], tmp: Path) -> float:
        quantize_dynamic_int8(src, tmp / "trial.onnx", keep_fp32=keep)
        session = ort_session(tmp / "trial.onnx")
        total = 0.0
        for feed, want in zip(feeds, expected, strict=True):
            for got, ref in zip(session.run(None, feed), want, strict=True):
                total += float(((got - ref) ** 2).sum() / max(float((ref ** 2).sum()), 1e-30))
        return total / len(feeds)

    with tempfile.TemporaryDirectory() as tmp:
        errors = {node: error([node], Path(tmp)) for node in outliers}
        base = error([], Path(tmp))
    keep = min(errors, key=errors.get) if errors else None
    return {"keep": keep, "errors": errors, "all_int8": base, "outliers": outliers}


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
