"""`dlforge export`, `eval --backend onnxruntime` and `predict --backend onnxruntime` on trained runs, as a user runs
them: the export is checked on the run's own held-out inputs, onnxruntime gives the same metrics and predictions as
PyTorch to 4 decimals, and a damaged, stale or mismatching export is refused without losing the one before."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
from clitools import one_line_error, run_here, write_blobs_csv, write_config

from dlforge.deploy.onnx_export import ExportError
from dlforge.deploy.onnx_run import export_run


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("onnx-mlp")
    cfg = write_config(d / "cfg.yaml", write_blobs_csv(d / "blobs.csv"), max_steps=20, checkpoint_every=None)
    from dlforge.api import train

    return train(cfg, run_dir=d / "runs" / "mlp").run_dir


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("onnx-gpt")
    from dlforge.api import train

    overrides = ["train.max_steps=3", "train.warmup_steps=0", "data.limit=16", "model.n_layers=1", "model.dim=32",
                 "model.n_heads=2", "train.progress=false", "train.tensorboard=false", "train.checkpoint_every=null"]
    return train("gpt-shakespeare-char", overrides, run_dir=d / "runs" / "gpt").run_dir


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_export_then_eval_and_predict_in_onnxruntime_give_pytorchs_numbers(mlp_run, capsys):
    proc = run_here(capsys, "export", str(mlp_run), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    folder = mlp_run / "onnx"
    assert report["out"] == str(folder) and json.loads((folder / "export.json").read_text()) == \
        {k: v for k, v in report.items() if k != "out"}
    assert [c["shapes"]["x"] for c in report["checks"]] == [[2, 6], [5, 6]]  # two batch sizes, held-out rows
    assert 0 <= report["max_abs_diff"] <= 1e-4 and report["source"]["run"] == mlp_run.name

    torch_eval, onnx_eval = (json.loads(run_here(capsys, "eval", str(mlp_run), "--backend", b, "--json").stdout)
                             for b in ("torch", "onnxruntime"))
    assert onnx_eval["backend"] == "onnxruntime" and "loss" not in onnx_eval["metrics"]
    assert set(onnx_eval["metrics"]) == set(torch_eval["metrics"]) - {"loss"}
    for key, value in onnx_eval["metrics"].items():
        assert round(value, 4) == round(torch_eval["metrics"][key], 4), key

    rows = mlp_run.parent.parent / "blobs.csv"
    outs = {b: mlp_run.parent / f"pred-{b}.csv" for b in ("torch", "onnxruntime")}
    for backend, out in outs.items():
        assert run_here(capsys, "predict", str(mlp_run), str(rows), "--backend", backend, "--out", str(out)
                        ).returncode == 0
    torch_rows, onnx_rows = ([r for r in csv.DictReader(open(out))] for out in outs.values())
    assert len(torch_rows) == 200
    for a, b in zip(torch_rows, onnx_rows, strict=True):
        assert a["prediction"] == b["prediction"]
        for key in a:
            if key.startswith("p_"):
                assert abs(float(a[key]) - float(b[key])) < 1e-4


def test_a_mismatching_export_is_refused_and_the_one_before_is_kept(mlp_run, capsys):
    if not (mlp_run / "onnx").exists():
        assert run_here(capsys, "export", str(mlp_run)).returncode == 0
    before = _digest(mlp_run / "onnx")
    with pytest.raises(ExportError, match=r"differs from PyTorch's by .* \(tolerance 1e-12\).*; not exported"):
        export_run(mlp_run, tolerance=1e-12)  # float32 through another runtime is never exact everywhere
    assert _digest(mlp_run / "onnx") == before
    assert not [p for p in mlp_run.iterdir() if p.name.startswith(".onnx")]  # no temp folder left behind


def test_damaged_missing_or_misplaced_exports_are_one_line_errors(mlp_run, tmp_path, capsys):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    proc = run_here(capsys, "export", str(mlp_run), "--out", str(keep))
    assert proc.returncode == 2 and "is not an ONNX export of dlforge's" in one_line_error(proc)
    assert (keep / "notes.txt").read_text() == "mine"

    proc = run_here(capsys, "eval", str(mlp_run), "--backend", "onnxruntime", "--split", "val")
    if not (mlp_run / "onnx").exists():
        assert proc.returncode == 2 and "dlforge export" in one_line_error(proc)
        assert run_here(capsys, "export", str(mlp_run)).returncode == 0
    model = mlp_run / "onnx" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    proc = run_here(capsys, "eval", str(mlp_run), "--backend", "onnxruntime")
    assert proc.returncode == 2 and "model.onnx: sha256 mismatch" in one_line_error(proc)
    assert run_here(capsys, "export", str(mlp_run)).returncode == 0  # a damaged export is replaced

    proc = run_here(capsys, "eval", str(mlp_run), "--backend", "tensorrt")
    assert proc.returncode == 2 and "--backend: 'tensorrt' is not a backend" in one_line_error(proc)


def test_a_language_model_exports_with_a_dynamic_length_and_keeps_its_perplexity(gpt_run, capsys):
    proc = run_here(capsys, "export", str(gpt_run), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["dynamic"]["input_ids"] == [0, 1] and report["dynamic"]["logits"] == [0, 1]
    lengths = [c["shapes"]["input_ids"] for c in report["checks"]]
    assert lengths[0][0] == 2 and lengths[1][0] == lengths[2][0] and lengths[2][1] == lengths[1][1] // 2
    torch_eval, onnx_eval = (json.loads(run_here(capsys, "eval", str(gpt_run), "--backend", b, "--json").stdout)
                             for b in ("torch", "onnxruntime"))
    for key in ("perplexity", "accuracy", "bits_per_token"):
        assert round(onnx_eval["metrics"][key], 4) == round(torch_eval["metrics"][key], 4), key
    proc = run_here(capsys, "predict", str(gpt_run), str(gpt_run / "config.yaml"), "--backend", "onnxruntime")
    assert proc.returncode == 2 and "decoded token by token" in one_line_error(proc)


def test_greedy_decoding_through_the_kv_cache_graph_is_the_models_own(gpt_run, capsys):
    """model_with_past.onnx fed its own presents, token by token, picks the tokens the PyTorch model picks with its
    preallocated KVCache, with logits within 1e-4 at every step."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from dlforge.api import load

    if not (gpt_run / "onnx" / "model_with_past.onnx").exists():
        assert run_here(capsys, "export", str(gpt_run)).returncode == 0
    report = json.loads((gpt_run / "onnx" / "export.json").read_text())
    graph = report["graphs"]["model_with_past.onnx"]
    assert graph["max_abs_diff"] <= 1e-4 and [c["shapes"]["input_ids"][1] for c in graph["checks"]][1] == 1
    model = load(gpt_run)
    layers = model.config.n_layers
    session = ort.InferenceSession(str(gpt_run / "onnx" / "model_with_past.onnx"), providers=["CPUExecutionProvider"])
    prompt = torch.tensor([[5, 9, 2, 7], [1, 1, 3, 8]])
    heads, head_dim = model.config.n_heads, model.config.dim // model.config.n_heads
    past = {f"past_{k}_{i}": np.zeros((2, heads, 0, head_dim), np.float32) for i in range(layers)
            for k in ("key", "value")}
    names = ["logits"] + [f"present_{k}_{i}" for i in range(layers) for k in ("key", "value")]
    cache, ids, theirs = model.init_state(2), prompt, prompt.numpy()
    with torch.no_grad():
        for _ in range(8):
            logits, cache = model.step(ids, cache)
            got = session.run(names, {"input_ids": theirs, **past})
            np.testing.assert_allclose(got[0], logits.numpy(), rtol=0, atol=1e-4)
            ids = logits[:, -1].argmax(-1, keepdim=True)
            theirs = got[0][:, -1].argmax(-1)[:, None].astype(np.int64)
            assert (theirs == ids.numpy()).all()
            past = {n.replace("present", "past"): v for n, v in zip(names[1:], got[1:], strict=True)}
    assert past["past_key_0"].shape[2] == cache.length == 4 + 7
