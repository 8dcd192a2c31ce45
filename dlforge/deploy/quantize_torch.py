"""Dynamic int8 through PyTorch: `dlforge quantize RUN --backend torch`, where it works, and what it changed.

`torch.ao.quantization.quantize_dynamic` stores the weights of Linear, LSTM and GRU layers as int8 and quantizes
their inputs on the fly. It is deprecated in torch 2.13 (its successor is torchao, not a dependency here) and does
not fit every model: a layer whose weight is read directly (a tied output embedding through `F.linear`, an
attention that slices its projection's weight) breaks once the layer is swapped. So each candidate layer is
quantized and the model run on held-out inputs; a layer that breaks the forward is left in fp32 and named in the
report with the reason, and a model with no layer left says so in one line, never a traceback.

The report (RUN/quantize-torch-dynamic.json) has the fields of onnxruntime's (`dlforge.deploy.quantize`): the test
metrics of the fp32 and the int8 model, the size of each one's state dict as torch.save writes it, and PyTorch's
latency of each at batch 1 and 64 in paired rounds. Nothing else is written: an int8 PyTorch model has no
safetensors form (its packed weights are not plain tensors); onnxruntime's int8 graph is the one to deploy.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlforge.artifacts import load_trained, read_json
from dlforge.config import load_config
from dlforge.data.dataset import build_data
from dlforge.deploy.latency import paired_latency
from dlforge.deploy.onnx_export import error_reason
from dlforge.deploy.onnx_run import batch_of
from dlforge.deploy.quantize import LATENCY_BATCHES, QuantizeError, _has_vnni, _notes
from dlforge.eval.evaluate import evaluate_model
from dlforge.registry import create_task
from dlforge.runs.rundir import atomic_write_json, resolve_run

REPORT = "quantize-torch-dynamic.json"
LAYERS = (nn.Linear, nn.LSTM, nn.GRU)
DEPRECATED = ("torch.ao.quantization is deprecated in torch 2.13 (its successor is torchao); its dynamic int8 is "
              "measured here while it works, and onnxruntime's int8 (--backend onnxruntime) is the one to deploy")


def quantize_torch(run: str | Path, runs_dir: str | Path = "runs", rounds: int = 10, calls: int = 3
                   ) -> tuple[Path, dict[str, Any]]:
    """Dynamic int8 of a run's model in PyTorch (see the module docstring); returns the report's path and itself."""
    run_path = resolve_run(str(run), runs_dir)
    model = load_trained(run_path)
    data = build_data(load_config(run_path / "config.yaml"))
    test = data.split("test") if data.test is not None else data.split("val")
    names = [spec["name"] for spec in read_json(run_path / "model" / "signature.json")["inputs"]]
    probe = batch_of(test, range(min(2, len(test))), names)
    int8, quantized, refused = quantize_layers(model, probe)
    task = create_task(data.info.get("task"))
    loss = getattr(model.config, "loss", "")
    metrics = {key: evaluate_model(m, test, task.metrics(data.info, loss, "test")) for key, m in
               (("fp32", model), ("int8", int8))}
    size = {"fp32_bytes": _state_bytes(model), "int8_bytes": _state_bytes(int8)}
    size["ratio"] = size["fp32_bytes"] / size["int8_bytes"]
    latency = {}
    with torch.inference_mode():
        for n in sorted({min(n, len(test)) for n in LATENCY_BATCHES}):
            batch = batch_of(test, range(n), names)
            runs = ("fp32", lambda b=batch: model(b)), ("int8", lambda b=batch: int8(b))
            latency[f"batch {n}"] = paired_latency(*runs, n, rounds, calls)
    vnni = _has_vnni()
    refusals = [f"{name} left in fp32: {reason}" for name, reason in refused.items()]
    report = {"mode": "dynamic", "backend": "torch", "run": run_path.name, "model": model.registry_name,
              "quantized": quantized, "refused": refused, "metrics": metrics, "size": size, "latency": latency,
              "cpu_int8_dot_product": vnni, "notes": [DEPRECATED, *refusals, *_notes(latency, vnni)]}
    path = run_path / REPORT
    atomic_write_json(path, report)
    return path, report


def quantize_layers(model: nn.Module, probe: dict[str, torch.Tensor]) -> tuple[nn.Module, list[str], dict[str, str]]:
    """A dynamic-int8 copy of `model`: every Linear/LSTM/GRU that still lets the model run on `probe`. Returns the
    copy, the layers quantized and {layer: why not} for those left in fp32."""
    candidates = [name for name, m in model.named_modules() if isinstance(m, LAYERS)]
    if not candidates:
        raise QuantizeError(f"{model.registry_name} has no Linear, LSTM or GRU layer for PyTorch's dynamic int8 "
                            "(its convolutions are quantized by onnxruntime: --backend onnxruntime --mode static)")
    whole, reason = _try(model, candidates, probe)
    if reason is None:
        return whole, candidates, {}
    kept, refused = [], {}
    for name in candidates:  # one at a time: which layers break the forward once quantized
        _, reason = _try(model, [name], probe)
        if reason is None:
            kept.append(name)
        else:
            refused[name] = reason
    if not kept:
        raise QuantizeError(f"PyTorch's dynamic int8 breaks every layer of {model.registry_name}: "
                            f"{next(iter(refused))}: {next(iter(refused.values()))}")
    together, reason = _try(model, kept, probe)
    if reason is not None:
        raise QuantizeError(f"PyTorch's dynamic int8 of {model.registry_name} fails with its layers together: {reason}")
    return together, kept, refused


def _try(model: nn.Module, layers: list[str], probe: dict[str, torch.Tensor]) -> tuple[nn.Module, str | None]:
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    try:
        with _quiet():
            q = quantize_dynamic(copy.deepcopy(model).eval(), {name: default_dynamic_qconfig for name in layers},
                                 dtype=torch.qint8)
            with torch.inference_mode():
                out = q(probe)
        if not torch.isfinite(out.logits).all():
            return q, "its output is not finite"
        return q, None
    except Exception as exc:  # whatever the swapped layer breaks: named, never raised
        return model, error_reason(exc)


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():  # the deprecation, said once in the report
        warnings.simplefilter("ignore")
        yield


def _state_bytes(model: nn.Module) -> int:
    """Bytes of the model's state dict as torch.save writes it (packed int8 weights included); nothing is kept."""
    buffer = io.BytesIO()
    with _quiet():
        torch.save(model.state_dict(), buffer)
    return buffer.tell()
