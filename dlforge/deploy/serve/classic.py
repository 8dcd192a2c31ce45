"""Classic inference in `dlforge serve`: KServe's Open Inference Protocol (v2) and a plain JSON form.

    GET  /v2/models/{name}          metadata: the task's input and output tensors (its signature)
    POST /v2/models/{name}/infer    {"inputs": [{"name", "shape", "datatype", "data"}]} -> {"outputs": [...]}
    POST /v1/predict                {"model", "inputs": [...]}: rows as `dlforge predict` gives them
    POST /v1/predict (multipart)    model=..., files=@a.png ...: images uploaded

The v2 form is the model's forward on tensors the client has prepared, checked against the signature (names,
datatypes, shapes with -1 where the size varies, and the data's length). The plain form takes what a user has (a
table's rows as objects, texts, images as base64 or uploads), prepares it exactly as `dlforge predict` does (the
inputs are written to a scratch folder in the file format the task reads, then read back by the task's own
reader) and answers the same rows: a label and class probabilities, a value, ...
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import math
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlforge.deploy.serve.openai_api import ApiError

DATATYPES = {"float32": "FP32", "float64": "FP64", "float16": "FP16", "int64": "INT64", "int32": "INT32",
             "int16": "INT16", "int8": "INT8", "uint8": "UINT8", "bool": "BOOL"}
NUMPY = {v: k for k, v in DATATYPES.items()}
MAX_ROWS = 256
IMAGE_TYPES = {b"\x89PNG": ".png", b"\xff\xd8\xff": ".jpg", b"GIF8": ".gif", b"BM": ".bmp"}


def signature(served: Any) -> dict[str, Any]:
    sig = (served.model.meta.get("extra") or {}).get("signature.json")
    if not sig:
        raise ApiError(400, f"model {served.id} has no signature.json (train it again with this dlforge)", "model")
    return sig


def metadata(served: Any) -> dict[str, Any]:
    sig = signature(served)
    spec = lambda t: {"name": t["name"], "datatype": DATATYPES.get(t["dtype"], t["dtype"].upper()),  # noqa: E731
                      "shape": t["shape"]}
    return {"name": served.id, "versions": [served.version] if served.version else [], "platform": "pytorch",
            "task": sig["task"], "inputs": [spec(t) for t in sig["inputs"]], "outputs": [spec(t) for t in
                                                                                        sig["outputs"]]}


def infer_inputs(served: Any, body: Any) -> dict[str, torch.Tensor]:
    """The request's tensors, checked against the signature: a 400 naming the input at the first mismatch."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise ApiError(400, "inputs: expected a non-empty list of {name, shape, datatype, data}", "inputs")
    wanted = {t["name"]: t for t in signature(served)["inputs"]}
    tensors: dict[str, torch.Tensor] = {}
    for i, item in enumerate(body["inputs"]):
        where = f"inputs[{i}]"
        if not isinstance(item, dict):
            raise ApiError(400, f"{where}: expected an object with name, shape, datatype and data", where)
        name = item.get("name")
        if name not in wanted:
            raise ApiError(400, f"{where}.name: {name!r} is not an input of {served.id} (inputs: "
                                f"{', '.join(wanted)})", f"{where}.name")
        spec = wanted[name]
        datatype = DATATYPES.get(spec["dtype"], spec["dtype"].upper())
        if item.get("datatype") != datatype:
            raise ApiError(400, f"{where}.datatype: expected {datatype}, got {item.get('datatype')!r}",
                           f"{where}.datatype")
        shape = item.get("shape")
        if (not isinstance(shape, list) or len(shape) != len(spec["shape"])
                or not all(isinstance(d, int) and d >= 1 for d in shape)
                or any(w != -1 and w != d for w, d in zip(spec["shape"], shape, strict=True))):
            raise ApiError(400, f"{where}.shape: expected {spec['shape']} (-1: any size), got {shape}",
                           f"{where}.shape")
        if shape[0] > MAX_ROWS:
            raise ApiError(400, f"{where}.shape: at most {MAX_ROWS} rows a request, got {shape[0]}", f"{where}.shape")
        data = item.get("data")
        size = math.prod(shape)
        try:
            array = np.asarray(data, dtype=NUMPY[datatype]).reshape(-1)
        except (TypeError, ValueError, KeyError):
            raise ApiError(400, f"{where}.data: expected {size} numbers of {datatype}", f"{where}.data") from None
        if array.size != size or not np.isfinite(array.astype(np.float64)).all():
            raise ApiError(400, f"{where}.data: expected {size} finite values for shape {shape}, got {array.size}",
                           f"{where}.data")
        tensors[name] = torch.from_numpy(array.reshape(shape).copy())
    missing = [n for n in wanted if n not in tensors]
    if missing:
        raise ApiError(400, f"inputs: missing {', '.join(missing)}", "inputs")
    rows = {len(t) for t in tensors.values()}
    if len(rows) > 1:
        raise ApiError(400, f"inputs: every input needs as many rows, got {sorted(rows)}", "inputs")
    return tensors


@torch.no_grad()
def forward(served: Any, tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The model's outputs (its signature's) for a batch of inputs."""
    out = served.model(tensors)
    names = [t["name"] for t in signature(served)["outputs"]]
    return {name: getattr(out, name).float().cpu().numpy() for name in names}


def forward_rows(served: Any, rows: list[dict[str, torch.Tensor]]) -> list[dict[str, np.ndarray]]:
    """`forward` over rows stacked into one batch, and its outputs cut back into rows (for dynamic batching)."""
    outputs = forward(served, {k: torch.stack([r[k] for r in rows]) for k in rows[0]})
    return [{k: v[i] for k, v in outputs.items()} for i in range(len(rows))]


def outputs_body(served: Any, outputs: dict[str, np.ndarray], request_id: str | None) -> dict[str, Any]:
    body = {"model_name": served.id, "outputs": [
        {"name": name, "shape": list(a.shape), "datatype": DATATYPES[str(a.dtype)], "data": a.reshape(-1).tolist()}
        for name, a in outputs.items()]}
    if served.version:
        body["model_version"] = served.version
    if request_id is not None:
        body["id"] = request_id
    return body


def predict_rows(served: Any, inputs: list[Any], uploads: list[bytes] | None = None) -> list[dict[str, Any]]:
    """`dlforge predict`'s rows for inputs given in JSON (or images uploaded), read by the task's own reader."""
    from dlforge.registry import create_task

    pre = (served.model.meta.get("extra") or {}).get("preprocessing.json") or {}
    kind = pre.get("kind", "tabular")
    items = uploads if uploads is not None else inputs
    if not 1 <= len(items) <= MAX_ROWS:
        raise ApiError(400, f"inputs: expected 1 to {MAX_ROWS} inputs, got {len(items)}", "inputs")
    task = create_task(pre.get("task") or "classification")
    with tempfile.TemporaryDirectory(prefix="dlforge-serve-") as tmp:
        path = _write_inputs(Path(tmp), kind, items, uploads is not None)
        rows = task.predict(served.model, path)
    for i, row in enumerate(rows):
        row.pop("line", None)
        row["index"] = i
    return rows


def predict_with_features(served: Any, inputs: list[Any], uploads: list[bytes] | None = None
                          ) -> tuple[list[dict[str, Any]], list[str] | None]:
    """`predict_rows`, and for an image classifier with pooled features (a CNN: `features` and `head`) each image's
    penultimate features as base64 little-endian float32, for the request store (`dlforge monitor` runs MMD on
    them). They are taken from the same forward pass by a hook on the head's input (the pooling only is added);
    None for other models."""
    pre = (served.model.meta.get("extra") or {}).get("preprocessing.json") or {}
    model = served.model
    pooled = callable(getattr(type(model), "features", None)) and isinstance(getattr(model, "head", None),
                                                                           torch.nn.Sequential)
    if pre.get("kind") != "image" or not pooled:
        return predict_rows(served, inputs, uploads), None
    if model not in _hooked:
        model.head.register_forward_pre_hook(_keep_pooled)
        _hooked.add(model)
    _captured.parts = []  # this thread's forward passes only: requests run in several threads at once
    try:
        rows = predict_rows(served, inputs, uploads)
        parts = _captured.parts
        features = torch.cat(parts).numpy() if parts else None
    finally:
        _captured.parts = None
    if features is None or len(features) != len(rows):
        return rows, None
    return rows, [base64.b64encode(f.astype("<f4").tobytes()).decode() for f in features]


_captured = threading.local()
_hooked: weakref.WeakSet = weakref.WeakSet()  # the models whose head has the hook (added once)


def _keep_pooled(head: torch.nn.Module, args: tuple) -> None:
    parts = getattr(_captured, "parts", None)
    if parts is None:
        return
    try:
        parts.append(head[0](args[0]).detach().float().reshape(len(args[0]), -1).cpu())  # (B, D) pooled
    except Exception:  # noqa: BLE001 - a head of another shape: the request is answered, its features not kept
        _captured.parts = None


def _write_inputs(tmp: Path, kind: str, items: list[Any], uploaded: bool) -> Path:
    if kind == "image":
        folder = tmp / "images"
        folder.mkdir()
        for i, item in enumerate(items):
            raw = item if uploaded else _image_bytes(item, i)
            suffix = next((s for magic, s in IMAGE_TYPES.items() if raw.startswith(magic)), None)
            if suffix is None:
                raise ApiError(400, f"inputs[{i}]: not a PNG, JPEG, GIF or BMP image", f"inputs[{i}]")
            (folder / f"{i:05d}{suffix}").write_bytes(raw)
        return folder
    if uploaded:
        raise ApiError(400, f"files: this model reads {kind} inputs, not uploaded images", "files")
    if kind == "bert_text":
        if not all(isinstance(t, str) and t.strip() for t in items):
            raise ApiError(400, "inputs: expected non-empty strings, one text each", "inputs")
        path = tmp / "texts.txt"
        path.write_text("".join(" ".join(t.split()) + "\n" for t in items), encoding="utf-8")
        return path
    if not all(isinstance(r, dict) and r for r in items):
        raise ApiError(400, "inputs: expected objects, one row each ({\"column\": value, ...})", "inputs")
    columns = list(dict.fromkeys(k for r in items for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(items)
    path = tmp / "input.csv"
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def _image_bytes(item: Any, i: int) -> bytes:
    if not isinstance(item, str):
        raise ApiError(400, f"inputs[{i}]: expected an image as a base64 string", f"inputs[{i}]")
    text = item.split(",", 1)[1] if item.startswith("data:") else item  # a data URL too
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"inputs[{i}]: not valid base64", f"inputs[{i}]") from None
