"""ONNX export of a trained model, kept only once onnxruntime gives PyTorch's numbers.

    folder = export_onnx(model, signature, examples, Path("runs/NAME/onnx"), source={...})

The graph's inputs and outputs are the task's signature (`Task.signature`, saved as the model folder's
signature.json): its names, with the batch dynamic, and any length the signature marks -1 dynamic too. torch's
exporter (`torch.onnx.export(dynamo=True)`, through torch.export and onnxscript) writes the graph; then every example
batch (held-out inputs at two sizes, from the caller) runs through PyTorch and through onnxruntime, and the largest
absolute difference of every output is written to export.json. Above `TOLERANCE` the export is refused and nothing is
kept: the folder is written all at once (`dlforge.artifacts.write_folder`), so a failed or killed export leaves the
previous one, if any, as it was.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlforge.artifacts import read_json, verify_folder, write_folder, write_json
from dlforge.errors import DlforgeError
from dlforge.layers.attention import MultiHeadAttention

FORMAT = "dlforge-onnx"
TOLERANCE = 1e-4  # fp32: the largest absolute difference allowed between onnxruntime's outputs and PyTorch's
# ONNX opsets, tried in order: 23 has the Attention op, which onnxruntime runs as one kernel (MiniLM at batch 64 x 128
# tokens: 1.8 s against 2.7 s for opset 18's decomposed softmax(QK^T)V); onnxruntime 1.32's Attention refuses some
# shapes, and such a graph is exported again at 18. Cross-attention under a padding mask is one of them, so a model
# with cross-attention starts at 18.
OPSETS = (23, 18)


class ExportError(DlforgeError):
    """A model that can't be exported, or whose export gives other numbers than PyTorch."""


class Unrunnable(ExportError):
    """onnxruntime refused to run an exported graph (a kernel's limits, or a size fixed at export)."""


def require_onnx() -> Any:
    """onnxruntime, or a one-line error naming the extra that installs it."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise DlforgeError(f"ONNX needs the export extra ({exc.name} is not installed): "
                           f"pip install 'dlforge[export]'") from None
    return onnxruntime


# Graph rewrites dlforge's sessions run without. SkipLayerNormFusion merges a residual Add into the LayerNormalization
# after it; in onnxruntime 1.32 on these AVX-512 CPUs the fused kernel is slower than the two it replaces (MiniLM-L6,
# 16 x 128 tokens, one thread: fp32 1171 -> 1037 ms, dynamic int8 786 -> 669 ms without it); the outputs are the same.
SLOWER_FUSIONS = ("SkipLayerNormFusion",)


def ort_session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session over the graph at `path` (`threads`: its intra-op pool; default one per core),
    without the rewrites in SLOWER_FUSIONS."""
    ort = require_onnx()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(SLOWER_FUSIONS))


class SignatureGraph(torch.nn.Module):
    """`model` as a graph of positional tensors: the signature's inputs in, its outputs out (a tuple)."""

    def __init__(self, model: torch.nn.Module, inputs: Sequence[str], outputs: Sequence[str]):
        super().__init__()
        self.model, self.inputs, self.outputs = model, tuple(inputs), tuple(outputs)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(dict(zip(self.inputs, tensors, strict=True)))
        return tuple(getattr(out, name) for name in self.outputs)


@dataclass
class Graph:
    """One more graph of an export, beside model.onnx: `module` (forward(batch dict) -> an object with the
    signature's outputs as attributes), its signature and its example batches (the first traced), as for the model."""

    file: str
    module: torch.nn.Module
    signature: Mapping[str, Any]
    examples: Sequence[Mapping[str, torch.Tensor]]


def export_onnx(model: torch.nn.Module, signature: Mapping[str, Any], examples: Sequence[Mapping[str, torch.Tensor]],
                out: Path, source: Mapping[str, Any] | None = None, tolerance: float = TOLERANCE,
                extra: Sequence[Graph] = (), optimize: bool = True) -> dict[str, Any]:
    """Export `model` (eval mode, on the CPU) to `out`/model.onnx with `out`/export.json; returns export.json.

    `examples` are batches of the signature's inputs: the first is traced (its batch must be 2 or more, or the
    exporter would fix the batch to 1), every one is checked. `extra` graphs (a decoder step with its KV cache...)
    are exported and checked the same way into the same folder, and reported under "graphs". Raises `ExportError`
    with a one-line reason when the exporter fails, or when an output's shape or values differ from PyTorch's by more
    than `tolerance`; nothing is written then. `optimize`: onnxscript's graph optimizer after the export (constant
    folding, dead code; onnxruntime does much the same when it loads a graph, so it is mostly file size)."""
    ort = require_onnx()
    refusal = getattr(model, "export_refusal", None)
    if refusal:
        raise ExportError(f"{model.registry_name} can't be exported to ONNX: {refusal}")
    graphs = [Graph("model.onnx", model.eval().cpu(), signature, examples), *extra]
    report: dict[str, Any] = {}

    def fill(tmp: Path) -> None:
        done = {g.file: _export_graph(g, tmp / g.file, tolerance, optimize) for g in graphs}
        main = done.pop("model.onnx")
        report.update({"format": "onnx", "file": "model.onnx", "source": dict(source or {}),
                       "model": model.registry_name, **main, "tolerance": tolerance, "graphs": done,
                       "versions": _versions(ort)})
        write_json(tmp / "export.json", report)

    write_folder(Path(out), FORMAT, fill)
    return report


def _export_graph(g: Graph, path: Path, tolerance: float, optimize: bool) -> dict[str, Any]:
    names = [spec["name"] for spec in g.signature["inputs"]]
    outputs = [spec["name"] for spec in g.signature["outputs"]]
    missing = [n for n in names if n not in g.examples[0]]
    if missing:
        raise ExportError(f"the example inputs lack {', '.join(missing)} of the signature's inputs")
    if len(g.examples[0][names[0]]) < 2:
        raise ExportError("the traced example needs a batch of 2 or more (a batch of 1 would be fixed in the graph)")
    graph = SignatureGraph(g.module, names, outputs)
    cross = any(isinstance(m, MultiHeadAttention) and m.cross for m in g.module.modules())
    opsets = OPSETS[1:] if cross else OPSETS
    for opset in opsets:
        _trace(graph, [_tensor(g.examples[0][n]) for n in names], g.signature, path, opset, optimize)
        session = ort_session(path)
        try:
            checks = [_check(graph, session, {n: _tensor(ex[n]) for n in names}, tolerance) for ex in g.examples]
            break
        except Unrunnable:
            if opset == opsets[-1]:
                raise
    return {"opset": opset, "inputs": list(g.signature["inputs"]), "outputs": list(g.signature["outputs"]),
            "dynamic": _dynamic_axes(g.signature), "max_abs_diff": max(c["max_abs_diff"] for c in checks),
            "checks": checks}


def read_export(folder: Path) -> dict[str, Any]:
    """export.json of an export folder, after every file is checked against its manifest."""
    verify_folder(folder, FORMAT, ("model.onnx", "export.json"))
    return read_json(folder / "export.json")


def _tensor(value: torch.Tensor) -> torch.Tensor:
    return value.detach().cpu().contiguous()


def _dynamic_axes(signature: Mapping[str, Any]) -> dict[str, list[int]]:
    """Each input's and output's dynamic dimensions: those the signature marks -1 (the batch always)."""
    return {spec["name"]: [i for i, n in enumerate(spec["shape"]) if n == -1]
            for spec in [*signature["inputs"], *signature["outputs"]]}


def _trace(graph: SignatureGraph, args: list[torch.Tensor], signature: Mapping[str, Any], path: Path, opset: int,
           optimize: bool) -> None:
    dims = _dynamic_axes(signature)
    auto = torch.export.Dim.AUTO
    shapes = (tuple({i: auto for i in dims[name]} for name in graph.inputs),)  # forward(*tensors): one tuple argument
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter), warnings.catch_warnings(), \
                quiet_loggers("torch.onnx", "torch.export", "torch.fx", "torch._dynamo", "torch._export"):
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, tuple(args), str(path), dynamo=True, input_names=list(graph.inputs),
                              output_names=list(graph.outputs), dynamic_shapes=shapes, opset_version=opset,
                              external_data=False, optimize=optimize, verbose=False, report=False)
    except Exception as exc:
        raise ExportError(f"{graph.model.registry_name} could not be exported to ONNX: {error_reason(exc)}") from exc


def _check(graph: SignatureGraph, session: Any, batch: dict[str, torch.Tensor], tolerance: float) -> dict[str, Any]:
    """Run `batch` through PyTorch and onnxruntime; the largest difference of every output, or ExportError."""
    with torch.no_grad():
        expected = graph(*batch.values())
    sizes = {k: list(v.shape) for k, v in batch.items()}
    try:
        got = session.run(list(graph.outputs), {k: v.numpy() for k, v in batch.items()})
    except Exception as exc:  # onnxruntime's Fail/InvalidArgument: e.g. a size the exporter fixed
        raise Unrunnable(f"onnxruntime could not run the exported graph on inputs of shapes {sizes}: "
                          f"{error_reason(exc)}") from exc
    diffs = {}
    for name, want, have in zip(graph.outputs, expected, got, strict=True):
        want = want.detach().float().numpy()
        if tuple(have.shape) != want.shape:
            raise ExportError(f"the ONNX graph's {name} has shape {list(have.shape)} for inputs of shapes {sizes}; "
                              f"PyTorch gives {list(want.shape)} (a size fixed at export?)")
        diffs[name] = float(np.abs(have.astype(np.float32) - want).max()) if want.size else 0.0
    worst = max(diffs, key=diffs.get)
    if not diffs[worst] <= tolerance:
        raise ExportError(f"the ONNX graph's {worst} differs from PyTorch's by {diffs[worst]:.3g} (tolerance "
                          f"{tolerance:g}) on inputs of shapes {sizes}; not exported")
    return {"shapes": sizes, "max_abs_diff": diffs[worst], "per_output": diffs}


def error_reason(exc: BaseException) -> str:
    """The line of an exporter's error that says what went wrong (its summary's, else its first)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if line.startswith("## Exception summary") and i + 1 < len(lines):
            return _clean(lines[i + 1])
    return _clean(lines[0]) if lines else type(exc).__name__


def _clean(line: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", line)[:400]


@contextlib.contextmanager
def quiet_loggers(*loggers: str):
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in loggers]
    for logger, _ in saved:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def _versions(ort: Any) -> dict[str, str]:
    import onnx
    import onnxscript

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxscript": onnxscript.__version__,
            "onnxruntime": ort.__version__}
