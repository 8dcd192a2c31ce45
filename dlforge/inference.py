"""Using a trained run: `load`, `evaluate`, `predict` (the half of the Python API that `dlforge.api` re-exports
beside training).

    model = load("runs/iris-logistic-...")                 # eval mode; model.meta: config, preprocessing, folder
    metrics = evaluate("latest", split="test")             # the task's metrics (and decoded scores: BLEU...)
    rows = predict("latest", "new_rows.csv", out="p.csv")  # read as the run's task reads inputs
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dlforge.artifacts import load_trained
from dlforge.config import load_config
from dlforge.data.dataset import build_data
from dlforge.deploy.onnx_run import backend_model
from dlforge.errors import DlforgeError
from dlforge.eval.evaluate import evaluate_model
from dlforge.paths import output_file
from dlforge.registry import create_task
from dlforge.run_start import tokenizer_hash
from dlforge.runs.rundir import atomic_write_text, resolve_run


def load(path: str | Path, device: str = "cpu") -> torch.nn.Module:
    """A trained model, in eval mode, from a model folder or a run; `model.meta` holds its config and preprocessing."""
    return load_trained(path, device=device)


def evaluate(run: str | Path, split: str = "test", backend: str = "torch", export: str | Path | None = None
             ) -> dict[str, float]:
    """Metrics of a run's final model on one split of its data (rebuilt from the run's config), with the scores its
    task decodes (BLEU and chrF of a translation run, exact match of an instruction-tuned one). `backend`
    "onnxruntime" runs the run's ONNX export instead (`dlforge export`): the task's metrics from its logits, without
    the loss or decoded scores (the graph is the forward pass); `export` is the export folder (default RUN/onnx)."""
    run_path = resolve_run(str(run))
    cfg = load_config(run_path / "config.yaml")
    data = build_data(cfg)
    ds = data.split(split, evaluation=True) if split in ("train", "val", "test") else None
    if ds is None:
        raise DlforgeError(f"--split: {split!r} is not a split of this run; expected train, val or test")
    model = backend_model(run_path, backend, export)
    trained_with = tokenizer_hash(model.meta["extra"].get("preprocessing.json"))
    if data.tokenizer is not None and trained_with is not None:  # e.g. data.tokenizer: latest:NAME has moved on
        from dlforge.text.tokenizer import check_tokenizer

        check_tokenizer(data.tokenizer, trained_with, f"{run_path}: data.tokenizer")
    task = create_task(data.info.get("task"))
    metrics = evaluate_model(model, ds, task.metrics(data.info, getattr(model.config, "loss", ""), split))
    decoded = None
    if backend == "torch":
        decoded = task.decoded_scores(model, ds, data.info, data.tokenizer, model.meta, train=data.train)  # BLEU...
    if decoded is not None:
        metrics.update(decoded[0])
    return metrics


def predict(run: str | Path, input_path: str | Path, out: str | Path | None = None, backend: str = "torch",
            export: str | Path | None = None) -> list[dict[str, Any]]:
    """Predictions of a run's model for new inputs, read as its task reads them: one row each, e.g. a label and class
    probabilities for rows of a CSV file, image files or texts, a forecast's steps after a file of recent values,
    the continuation of each prompt, the translation of each sentence (the model card names the file it reads).
    `backend` "onnxruntime" runs the run's ONNX export (`dlforge export`) where the task needs only the forward."""
    if out is not None:  # before any work
        output_file(out, "the CSV file to write the predictions to (out)")
    model = backend_model(run, backend, export)
    extra = model.meta["extra"]
    task_name = (extra.get("data_info.json") or {}).get("task") or extra["preprocessing.json"].get("task")
    task = create_task(task_name)
    if task.generates and backend != "torch":
        raise DlforgeError(f"predict --backend {backend}: a {task.name} model's predictions are decoded token by "
                           f"token, which its exported forward graph does not do; use --backend torch")
    rows = task.predict(model, Path(input_path))
    if out is not None:
        _write_rows(Path(out), rows)
    return rows


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["line", "prediction"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
