"""Pruning: magnitude masks against torch.nn.utils.prune, the gradual schedule, channels removed for real (the kept
sub-network computes what it did), masks through a kill -9 resume, and `dlforge prune`'s report checked against
the files and models it describes."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from clitools import ENV, dlforge_cmd, losses, one_line_error, run_here, train_rows, write_blobs_csv, write_config
from torch import nn
from torch.nn.utils import prune as torch_prune

import dlforge.catalog  # noqa: F401  (registers the zoo)
from dlforge.artifacts import load_trained
from dlforge.config import PruneConfig
from dlforge.deploy.channels import _importance, prunable, prune_channels, trace
from dlforge.deploy.prune import MASK, add_masks, measured_sparsity, sparsity_at, update_masks
from dlforge.errors import ConfigError
from dlforge.registry import create_model
from dlforge.train.checkpoint import load_checkpoint


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return create_model("mlp", in_features=20, out_features=3, hidden=[64, 32])


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_magnitude_masks_equal_torch_prune(scope):
    ours, ref = _mlp(), _mlp()
    add_masks(ours)
    update_masks(ours, 0.7, scope)
    layers = [m for m in ref.modules() if isinstance(m, nn.Linear)]
    if scope == "global":
        torch_prune.global_unstructured([(m, "weight") for m in layers], torch_prune.L1Unstructured, amount=0.7)
    else:
        for m in layers:
            torch_prune.l1_unstructured(m, "weight", amount=0.7)
    for (name, m), r in zip(((n, m) for n, m in ours.named_modules() if isinstance(m, nn.Linear)), layers,
                            strict=True):
        assert torch.equal(getattr(m, MASK), r.weight_mask.bool()), name
        assert torch.equal(m.weight, r.weight), name
    assert measured_sparsity(ours) == pytest.approx(0.7, abs=1e-3)


def test_gradual_schedule_is_zhu_and_gupta_cubic():
    cfg = PruneConfig(sparsity=0.8, schedule="gradual", start_step=10, end_step=110, every=10)
    assert sparsity_at(cfg, 5, 200) == 0.0
    for t in (10, 35, 60, 85, 110, 150):
        progress = min(1.0, (t - 10) / 100)
        assert sparsity_at(cfg, t, 200) == pytest.approx(0.8 + (0.0 - 0.8) * (1 - progress) ** 3)
    assert sparsity_at(PruneConfig(sparsity=0.5), 0, 10) == 0.5  # oneshot: all at once


# GoogLeNet's inception branches meet in a concatenation, which is left whole: only the channels inside a branch go
@pytest.mark.parametrize(("name", "kept"), [("resnet20", 0.3), ("lenet5", 0.3), ("simple_cnn", 0.3),
                                            ("efficientnet_b0_small", 0.3), ("googlenet_small", 0.65)])
def test_removed_channels_leave_the_kept_subnetwork_as_it_was(name, kept):
    torch.manual_seed(0)
    model = create_model(name).eval()
    for m in model.modules():  # trained-looking norms, so the importance order matters
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.1, 1.0)
            m.bias.data.normal_()
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    example = {"x": torch.randn(2, 1, 28, 28)}
    pruned = copy.deepcopy(model)
    prune_channels(pruned, example, 0.5)
    # the original with the removed channels cut off where they are read: what the pruned model must compute
    layers = dict(model.named_modules())
    with torch.no_grad():
        for g in prunable(trace(model, example)):
            order = torch.argsort(_importance(g, layers), descending=True, stable=True)
            dropped = order[max(1, round(g.size * 0.5)):]
            for consumer, factor in g.consumers:
                cols = (dropped[:, None] * factor + torch.arange(factor)[None, :]).flatten()
                layers[consumer].weight[:, cols] = 0
        want, got = model(example).logits, pruned(example).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    before = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in pruned.parameters()) < kept * before  # both sides of most weights halve


def test_residual_channels_are_cut_together_and_models_that_cannot_be_traced_say_why():
    model = create_model("resnet20")
    groups = prunable(trace(model, {"x": torch.randn(2, 1, 28, 28)}))
    stage1 = next(g for g in groups if "stem.conv" in g.producers)  # the stem and every block of stage 1 add into it
    assert sorted(stage1.producers) == ["stage1.0.conv2.conv", "stage1.1.conv2.conv", "stage1.2.conv2.conv",
                                        "stem.conv"]
    assert {"stage1.0.conv1.conv", "stage2.0.shortcut.conv"} <= {c for c, _ in stage1.consumers}
    with pytest.raises(ConfigError, match=r"train\.prune\.structured: ViT can't be traced"):
        vit = create_model("vit_tiny", image_size=28, in_channels=1, patch_size=7)
        prune_channels(vit, {"x": torch.randn(2, 1, 28, 28)}, 0.5)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    from dlforge.api import train

    d = tmp_path_factory.mktemp("prune")
    quiet = ["train.progress=false", "train.tensorboard=false", "train.checkpoint_every=null"]
    return train("digits-cnn", ["train.max_steps=40", "train.max_epochs=null", *quiet],
                 run_dir=d / "runs" / "src").run_dir


def test_prune_command_reports_what_the_files_and_models_hold(source, capsys):
    proc = run_here(capsys, "prune", str(source), "--sparsity", "0.8", "--finetune-steps", "8", "--rounds", "2",
                    "--json", "train.progress=false", "train.tensorboard=false")
    assert proc.returncode == 0, proc.stderr
    [report] = json.loads(proc.stdout)
    run = source.parent / report["run"]
    assert json.loads((run / "prune.json").read_text()) == report
    model = load_trained(run)
    assert report["params"]["after"]["nonzero"] == sum(int(p.count_nonzero()) for p in model.parameters())
    assert report["params"]["after"]["prunable_zero_fraction"] == pytest.approx(0.8, abs=0.01)
    assert report["file_bytes"]["after"] == (run / "model" / "model.safetensors").stat().st_size
    assert report["file_bytes"]["after_sparse_csr"] < 0.5 * report["file_bytes"]["after"]
    assert not any(k.endswith(MASK) for k in safetensors.torch.load_file(run / "model" / "model.safetensors"))
    assert report["notes"] and "as large" in report["notes"][0]  # a masked model is not smaller on disk
    ev = json.loads(run_here(capsys, "eval", str(run), "--json").stdout)["metrics"]
    assert round(ev["accuracy"], 4) == round(report["metrics"]["after"]["accuracy"], 4)
    assert sorted(report["latency"]) == ["batch 1", "batch 64"]
    rows = train_rows(run)
    assert all("step" in r for r in rows)  # only logged steps get a row, each with the sparsity it had
    assert [round(r["sparsity"], 2) for r in rows if "split" not in r] == [0.8] * len([r for r in rows
                                                                                      if "split" not in r])


def test_structured_prune_writes_a_smaller_model_that_loads_evaluates_and_predicts(source, capsys, tmp_path):
    proc = run_here(capsys, "prune", str(source), "--sparsity", "0.5", "--structured", "--finetune-steps", "6",
                    "--rounds", "2", "--json", "train.progress=false", "train.tensorboard=false")
    assert proc.returncode == 0, proc.stderr
    [report] = json.loads(proc.stdout)
    run = source.parent / report["run"]
    params = report["params"]
    assert params["after"]["total"] < 0.6 * params["before"]["total"]
    assert report["file_bytes"]["after"] < 0.6 * report["file_bytes"]["before"]
    model = load_trained(run)
    assert model.block1[0].conv.out_channels == load_trained(source).block1[0].conv.out_channels // 2
    assert sum(p.numel() for p in model.parameters()) == params["after"]["total"]
    ev = json.loads(run_here(capsys, "eval", str(run), "--json").stdout)["metrics"]
    assert round(ev["accuracy"], 4) == round(report["metrics"]["after"]["accuracy"], 4)
    from PIL import Image

    Image.fromarray((torch.rand(8, 8) * 255).to(torch.uint8).numpy(), mode="L").save(tmp_path / "digit.png")
    out = run_here(capsys, "predict", str(run), str(tmp_path / "digit.png"), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["prediction"] in {str(i) for i in range(10)}


def test_bad_prune_settings_are_one_line(source, capsys):
    proc = run_here(capsys, "prune", str(source), "--sparsity", "1.5")
    assert proc.returncode == 2 and "--sparsity" in one_line_error(proc)
    from dlforge.api import train

    with pytest.raises(ConfigError, match="train.prune.structured: needs train.init_from"):
        train("digits-cnn", ["train.max_steps=2", "train.prune={sparsity: 0.5, structured: true}"])


def test_masks_survive_kill_9_and_the_resumed_run_is_bitwise_the_same(tmp_path):
    csv = write_blobs_csv(tmp_path / "blobs.csv", n=300)
    prune = "{sparsity: 0.9, schedule: gradual, every: 4, end_step: 60}"
    cfg = write_config(tmp_path / "cfg.yaml", csv, max_steps=80, checkpoint_every=10, eval_every=20,
                       batch_size=64)
    args = [str(cfg), f"train.prune={prune}", "model.hidden=[256,256]"]
    ref, run = tmp_path / "ref", tmp_path / "killed"
    from dlforge.api import train

    train(str(cfg), args[1:], run_dir=ref)  # in this process: only the killed run needs its own
    proc = subprocess.Popen(dlforge_cmd("train", *args, "--run-dir", str(run)), cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed_at = None
    end = time.time() + 120
    while killed_at is None and time.time() < end and proc.poll() is None:
        ckpts = sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("checkpoint-*[0-9]")
                       if (p / "manifest.json").exists()) if (run / "checkpoints").exists() else []
        if ckpts and ckpts[-1] >= 30:
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = ckpts[-1]
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert killed_at is not None and killed_at < 80, "the run finished before it could be killed"
    state = load_checkpoint(run / "checkpoints" / f"checkpoint-{killed_at}")["model"]
    masks = [v for k, v in state.items() if k.endswith(MASK)]
    assert masks and 0 < sum(int((~m).sum()) for m in masks) / sum(m.numel() for m in masks) < 0.9
    train(None, resume=run)
    got, want = losses(run), losses(ref)
    assert got == want  # bitwise: the same masks, updates and zeros after the resume
    final = load_trained(run)  # the final weights: an earlier evaluation's were pruned less than asked
    assert json.loads((run / "eval.json").read_text())["weights"]["checkpoint"] == "last"
    assert measured_sparsity(final) == pytest.approx(0.9, abs=0.01)
    reference = load_trained(ref)
    for a, b in zip(final.state_dict().values(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b)
