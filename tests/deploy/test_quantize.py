"""`dlforge quantize`: int8 through onnxruntime's quantizer (dynamic, and static QDQ calibrated on training batches),
with the report's figures checked against what they claim to measure."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from clitools import one_line_error, run_here, write_blobs_csv, write_config


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    from dlforge.api import train
    from dlforge.deploy.onnx_run import export_run

    d = tmp_path_factory.mktemp("quantize")
    cfg = write_config(d / "cfg.yaml", write_blobs_csv(d / "blobs.csv", n=600), max_steps=40, checkpoint_every=None)
    mlp = train(cfg, run_dir=d / "runs" / "mlp").run_dir
    quiet = ["train.progress=false", "train.tensorboard=false", "train.checkpoint_every=null"]
    cnn = train("digits-cnn", ["train.max_steps=30", "train.max_epochs=null", *quiet],
                run_dir=d / "runs" / "cnn").run_dir
    for run in (mlp, cnn):
        export_run(run)
    return {"mlp": mlp, "cnn": cnn}


def test_dynamic_int8_reports_what_it_measured(runs, capsys):
    run = runs["mlp"]
    proc = run_here(capsys, "quantize", str(run), "--mode", "dynamic", "--rounds", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    folder = run / "onnx-int8-dynamic"
    assert report["out"] == str(folder) and json.loads((folder / "quantize.json").read_text())["mode"] == "dynamic"
    ops = {n.op_type for n in onnx.load(str(folder / "model.onnx")).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLinear"}  # int8 weights, on the fly
    size = report["size"]
    assert size["fp32_bytes"] == (run / "onnx" / "model.onnx").stat().st_size
    assert size["int8_bytes"] == (folder / "model.onnx").stat().st_size < size["fp32_bytes"]
    fp32 = json.loads(run_here(capsys, "eval", str(run), "--backend", "onnxruntime", "--json").stdout)["metrics"]
    int8 = json.loads(run_here(capsys, "eval", str(run), "--backend", "onnxruntime", "--export", str(folder),
                               "--json").stdout)["metrics"]
    for key in fp32:
        assert round(report["metrics"]["fp32"][key], 4) == round(fp32[key], 4), key
        assert round(report["metrics"]["int8"][key], 4) == round(int8[key], 4), key
    assert abs(int8["accuracy"] - fp32["accuracy"]) <= 0.05  # blobs: int8 weights barely move the decisions
    assert sorted(report["latency"]) == ["batch 1", "batch 60"]  # the test split has 60 rows: all of them
    for row in report["latency"].values():
        assert row["fp32_ms"] > 0 and row["int8_ms"] > 0 and row["rounds"] == 2
        assert (row["speedup_median"] < 1) == any(f"at batch {row['batch']} " in n for n in report["notes"])


def test_static_int8_is_calibrated_qdq_and_runs_through_eval_and_predict(runs, capsys, tmp_path):
    run = runs["cnn"]
    proc = run_here(capsys, "quantize", str(run), "--mode", "static", "--calibration-batches", "3", "--rounds", "1",
                    "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["calibration"] == {"split": "train", "batches": 3, "batch_size": 32}
    graph = onnx.load(str(run / "onnx-int8-static" / "model.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") >= 2 and ops.count("DequantizeLinear") >= 4  # activations and weights
    before, after = report["metrics"]["fp32"]["accuracy"], report["metrics"]["int8"]["accuracy"]
    assert abs(before - after) <= 0.05, (before, after)
    proc = run_here(capsys, "eval", str(run), "--backend", "onnxruntime", "--export", str(run / "onnx-int8-static"),
                    "--json")
    assert round(json.loads(proc.stdout)["metrics"]["accuracy"], 4) == round(after, 4)


def test_quantize_refuses_in_one_line(runs, capsys, tmp_path):
    proc = run_here(capsys, "quantize", str(runs["mlp"]), "--mode", "int4")
    assert proc.returncode == 2 and "--mode: 'int4' is not a quantization mode" in one_line_error(proc)
    proc = run_here(capsys, "eval", str(runs["mlp"]), "--export", str(tmp_path))
    assert proc.returncode == 2 and "--export: an export folder is run by --backend onnxruntime" in one_line_error(proc)
    bare = runs["mlp"].parent / "bare"
    bare.mkdir()
    proc = run_here(capsys, "quantize", str(bare))
    assert proc.returncode == 2


def test_torch_dynamic_int8_reports_metrics_size_and_latency_beside_onnxruntimes(runs, capsys):
    run = runs["mlp"]
    proc = run_here(capsys, "quantize", str(run), "--backend", "torch", "--rounds", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["out"] == str(run / "quantize-torch-dynamic.json") and report["backend"] == "torch"
    assert report["quantized"] == ["blocks.0.linear", "blocks.1.linear", "head"] and report["refused"] == {}
    evaluated = json.loads((run / "eval.json").read_text())["test"]
    assert round(report["metrics"]["fp32"]["accuracy"], 4) == round(evaluated["accuracy"], 4)
    assert abs(report["metrics"]["int8"]["accuracy"] - evaluated["accuracy"]) <= 0.05
    assert report["size"]["int8_bytes"] > 0 and report["size"]["fp32_bytes"] > 0
    assert "deprecated in torch 2.13" in report["notes"][0]
    assert sorted(report["latency"]) == ["batch 1", "batch 60"]
    proc = run_here(capsys, "quantize", str(run), "--backend", "torch", "--mode", "static")
    assert proc.returncode == 2 and "--backend torch: PyTorch's int8 here is dynamic only" in one_line_error(proc)


def test_layers_that_break_once_quantized_are_named_and_left_in_fp32():
    import torch
    import torch.nn.functional as F
    from torch import nn

    from dlforge.deploy.quantize import QuantizeError
    from dlforge.deploy.quantize_torch import quantize_layers
    from dlforge.models.output import Output

    class Tied(nn.Module):  # reads one Linear's weight directly, as a tied output embedding does
        registry_name = "tied"

        def __init__(self):
            super().__init__()
            self.embed, self.head = nn.Linear(8, 8), nn.Linear(8, 3)

        def forward(self, batch):
            return Output(logits=self.head(torch.relu(F.linear(batch["x"], self.embed.weight))))

    model = Tied().eval()
    probe = {"x": torch.randn(4, 8)}
    int8, kept, refused = quantize_layers(model, probe)
    assert kept == ["head"] and list(refused) == ["embed"] and refused["embed"]
    assert type(int8.head).__name__ == "Linear" and int8.head.__module__.startswith("torch.ao")
    torch.testing.assert_close(int8(probe).logits, model(probe).logits, atol=0.05, rtol=0.05)
    assert isinstance(model.embed, nn.Linear) and isinstance(model.head, nn.Linear)  # the original is untouched

    class Conv(nn.Module):
        registry_name = "conv"

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, batch):
            return Output(logits=self.conv(batch["x"]).flatten(1))

    with pytest.raises(QuantizeError, match="conv has no Linear, LSTM or GRU layer"):
        quantize_layers(Conv(), {"x": torch.randn(1, 1, 5, 5)})


def test_the_matmul_kept_in_fp32_is_the_one_whose_outliers_cost_most(tmp_path):
    """Three Linear layers over sequences (MatMuls, as in a transformer); the input of the second has one feature 1000x
    the others (an outlier channel that per-
    tensor int8 crushes the rest of the input for). `outlier_matmuls` ranks it first, and keeping it fp32 is what
    `least_harmed` finds brings the outputs closest to fp32's, with an error well below all-int8's."""
    import numpy as np
    import onnx
    import torch
    from torch import nn

    from dlforge.deploy.onnx_export import ort_session
    from dlforge.deploy.quantize import _has_vnni, least_harmed, outlier_matmuls, quantize_dynamic_int8

    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(32, 64), nn.Linear(64, 64), nn.Linear(64, 16)
            self.register_buffer("scale", torch.ones(64))
            self.scale[5] = 1000.0

        def forward(self, x):
            return self.c(torch.relu(self.b(torch.relu(self.a(x)) * self.scale)))

    path = tmp_path / "net.onnx"
    torch.onnx.export(Net().eval(), (torch.randn(4, 8, 32),), str(path), dynamo=True, input_names=["x"],
                      dynamic_shapes={"x": {0: torch.export.Dim("b")}}, external_data=False, verbose=False)
    feeds = [{"x": np.random.default_rng(i).standard_normal((16, 8, 32)).astype(np.float32)} for i in range(3)]
    matmuls = [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "MatMul"]
    ranked = outlier_matmuls(path, feeds, 3)
    assert list(ranked)[0] == matmuls[1] and ranked[matmuls[1]] > 2 * max(list(ranked.values())[1:])
    choice = least_harmed(path, feeds, 2)
    assert choice["keep"] == matmuls[1]
    assert choice["errors"][matmuls[1]] < choice["all_int8"]
    if _has_vnni():  # without VNNI (an AVX2 EPYC) the other MatMuls' int8 error dominates: 0.0388 kept, 0.0391 none
        assert choice["errors"][matmuls[1]] < 0.8 * choice["all_int8"]
    quantize_dynamic_int8(path, tmp_path / "int8.onnx", keep_fp32=[choice["keep"]])
    nodes = {n.name: n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node}
    assert nodes.get(matmuls[1]) == "MatMul"  # left as it was
    assert "DynamicQuantizeMatMul" in nodes.values() or "MatMulInteger" in nodes.values()  # the others quantized
    want = ort_session(path).run(None, feeds[0])[0]
    got = ort_session(tmp_path / "int8.onnx").run(None, feeds[0])[0]
    if _has_vnni():  # without VNNI (an AVX2 EPYC): 31.6 against an output of 108, c's int8 MatMul on b's output
        assert np.abs(got - want).max() < 0.1 * np.abs(want).max()
    assert np.isfinite(got).all() and got.shape == want.shape
