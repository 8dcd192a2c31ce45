"""A run's ONNX export, and its onnxruntime stand-in for evaluation and prediction.

    folder, report = export_run("runs/fashion-resnet-...")   # runs/.../onnx/model.onnx + export.json
    model = onnx_model("runs/fashion-resnet-...")            # forward(batch) -> Output(logits), in onnxruntime

`export_run` checks the graph on the run's own held-out inputs: the first 2 samples of its test split (else its
validation split) are traced, the next 5 checked, and where the signature marks a length as varying, those 5 again
at half that length. `onnx_model` reads the export back (every file against its manifest, the weights it was made
from against the run's), and stands in for the PyTorch model wherever only `forward` is needed: `dlforge eval
--backend onnxruntime` computes the task's metrics from its logits (the graph holds the inference path, so there is
no loss), `dlforge predict --backend onnxruntime` reads inputs as the task does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from dlforge.artifacts import load_trained, weights_sha256
from dlforge.config import load_config
from dlforge.data.dataset import build_data, collate_batch
from dlforge.deploy.onnx_decoder import has_kv_cache, is_encoder_decoder, seq2seq_graphs, with_past_graph
from dlforge.deploy.onnx_export import FORMAT, TOLERANCE, export_onnx, ort_session, read_export, require_onnx
from dlforge.errors import DlforgeError
from dlforge.models.output import Output
from dlforge.runs.rundir import resolve_run

BACKENDS = ("torch", "onnxruntime")
TRACED, CHECKED = 2, 5  # held-out samples: the traced batch, then the checked one


class NotInGraph(DlforgeError, AttributeError):
    """What the ONNX stand-in lacks (anything but forward): one line for a user, False for `hasattr`."""


def export_run(run: str | Path, out: str | Path | None = None, runs_dir: str | Path = "runs",
               tolerance: float = TOLERANCE) -> tuple[Path, dict[str, Any]]:
    """Export a finished run's model to ONNX (`out`, default RUN/onnx); returns the folder and its export.json."""
    run_path = resolve_run(str(run), runs_dir)
    model = load_trained(run_path)
    signature = _signature(model, run_path)
    examples = held_out_examples(run_path, signature)
    folder = Path(out) if out is not None else run_path / "onnx"
    replaceable(folder)
    source = {"run": run_path.name, "model_folder": Path(model.meta["folder"]).name,
              "weights_sha256": weights_sha256(Path(model.meta["folder"]))}
    extra = []
    if has_kv_cache(model):  # GPT: the decoder step too, its cache as inputs and outputs
        extra.append(with_past_graph(model, torch.cat([examples[0]["input_ids"], examples[1]["input_ids"]])))
    elif is_encoder_decoder(model):  # seq2seq: the encoder, and the decoder step over its cache
        extra += seq2seq_graphs(model, examples)
    return folder, export_onnx(model, signature, examples, folder, source, tolerance, extra)


def held_out_examples(run_path: Path, signature: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
    """Batches of the signature's inputs from the run's test (else validation) split: `TRACED` samples, the next
    `CHECKED`, and those again at half of every length the signature marks as varying."""
    data = build_data(load_config(run_path / "config.yaml"))
    split = next((name for name in ("test", "val") if getattr(data, name) is not None), None)
    if split is None:
        raise DlforgeError(f"{run_path}: its data has no test or validation split to check an export on")
    ds = data.split(split, evaluation=True)
    if len(ds) < TRACED + 1:
        raise DlforgeError(f"{run_path}: its {split} split has {len(ds)} samples; checking an export needs "
                           f"{TRACED + 1} or more")
    names = [spec["name"] for spec in signature["inputs"]]
    traced = batch_of(ds, range(TRACED), names)
    checked = batch_of(ds, range(TRACED, min(len(ds), TRACED + CHECKED)), names)
    examples = [traced, checked]
    shorter = {spec["name"]: [i for i, n in enumerate(spec["shape"]) if n == -1 and i > 0]
               for spec in signature["inputs"]}
    if any(shorter.values()):
        examples.append({k: _halve(v, shorter[k]) for k, v in checked.items()})
    return examples


def onnx_model(run: str | Path, export: str | Path | None = None, runs_dir: str | Path = "runs") -> OnnxModel:
    """The run's ONNX export (`export`, default RUN/onnx) in onnxruntime, standing in for its PyTorch model."""
    run_path = resolve_run(str(run), runs_dir)
    folder = Path(export) if export is not None else run_path / "onnx"
    if not (folder / "manifest.json").is_file():
        raise DlforgeError(f"{run_path.name}: no ONNX export at {folder}; run `dlforge export {run}` first")
    model = load_trained(run_path)
    return OnnxModel(folder, model)


def backend_model(run: str | Path, backend: str, export: str | Path | None = None) -> torch.nn.Module:
    """The run's model in PyTorch (`backend` "torch"), or its ONNX export (`export`, default RUN/onnx) in
    onnxruntime."""
    if backend not in BACKENDS:
        raise DlforgeError(f"--backend: {backend!r} is not a backend; expected one of {', '.join(BACKENDS)}")
    if export is not None and backend == "torch":
        raise DlforgeError("--export: an export folder is run by --backend onnxruntime, not torch")
    return load_trained(run) if backend == "torch" else onnx_model(run, export)


class OnnxModel(torch.nn.Module):
    """An ONNX export run by onnxruntime: forward(batch) -> Output(logits) without a loss; `config`, `meta` and
    `registry_name` are those of the PyTorch model it was exported from."""

    def __init__(self, folder: Path, model: torch.nn.Module, verify: bool = True):
        super().__init__()
        require_onnx()
        # `verify`: the files against the folder's manifest (False only for a folder still being written)
        self.export = read_export(folder) if verify else json.loads((folder / "export.json").read_text("utf-8"))
        made_from = self.export.get("source", {}).get("weights_sha256")
        if made_from != weights_sha256(Path(model.meta["folder"])):
            raise DlforgeError(f"{folder}: the export was made from other weights than this run's model; export again")
        self.session = ort_session(folder / "model.onnx")
        self.config, self.meta, self.registry_name = model.config, model.meta, model.registry_name
        self.input_names = [spec["name"] for spec in self.export["inputs"]]
        self.output_names = [spec["name"] for spec in self.export["outputs"]]

    def forward(self, batch: dict[str, torch.Tensor]) -> Output:
        missing = [n for n in self.input_names if n not in batch]
        if missing:
            raise DlforgeError(f"the ONNX graph needs the inputs {', '.join(missing)}, which the batch lacks")
        feeds = {n: batch[n].detach().cpu().contiguous().numpy() for n in self.input_names}
        logits = self.session.run(self.output_names[:1], feeds)[0]
        return Output(logits=torch.from_numpy(logits))

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            raise NotInGraph(f"--backend onnxruntime: {self.registry_name}'s {name} is not in its ONNX graph (the "
                             f"graph is its forward); use the torch backend") from None


def replaceable(folder: Path) -> None:
    """Refuse to write over anything but an earlier export: the export replaces its folder whole."""
    if not folder.exists():
        return
    manifest = folder / "manifest.json"
    try:
        fmt = json.loads(manifest.read_text(encoding="utf-8")).get("format") if manifest.is_file() else None
    except (OSError, ValueError, AttributeError):
        fmt = None
    if fmt != FORMAT:
        raise DlforgeError(f"{folder}: exists and is not an ONNX export of dlforge's, which the export would replace "
                           f"whole; choose another --out")


def _signature(model: torch.nn.Module, run_path: Path) -> dict[str, Any]:
    signature = model.meta["extra"].get("signature.json")
    if not signature:
        raise DlforgeError(f"{run_path}: its model folder has no signature.json (the inputs and outputs an export "
                           f"needs); train it again with this version of dlforge")
    return signature


def batch_of(ds: Any, indices: range, names: list[str]) -> dict[str, torch.Tensor]:
    """The samples `indices` of `ds` collated, keeping the inputs `names`."""
    batch = next(iter(DataLoader(Subset(ds, indices), batch_size=len(indices), collate_fn=collate_batch)))
    return {n: batch[n] for n in names}


def _halve(tensor: torch.Tensor, dims: list[int]) -> torch.Tensor:
    for d in dims:
        tensor = tensor.narrow(d, 0, max(1, tensor.shape[d] // 2))
    return tensor
