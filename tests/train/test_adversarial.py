"""The adversarial step: each player's optimizer moves only its own weights, the losses are the paper's, checkpoints
hold both optimizers so a run killed with SIGKILL resumes bit for bit, and the refusals name their key."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from clitools import ENV, dlforge_cmd, run_cli, train_rows

from dlforge.data.dataset import TensorDictDataset
from dlforge.errors import ConfigError
from dlforge.registry import create_model
from dlforge.train.adversarial import AdversarialTrainer
from dlforge.train.checkpoint import load_checkpoint

TINY = {"image_size": 8, "g_widths": [16, 8], "d_widths": [8, 16], "noise_dim": 8}


def images(n: int = 64) -> TensorDictDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDictDataset({"x": torch.rand(n, 1, 8, 8, generator=g), "y": torch.randint(0, 10, (n,), generator=g)})


def test_each_step_moves_d_then_g_with_their_own_optimizers(train_config):
    torch.manual_seed(0)
    gan = create_model("dcgan", **TINY, d_lr_scale=2.0)
    before = {k: v.clone() for k, v in gan.state_dict().items()}
    t = AdversarialTrainer(gan, train_config(max_steps=1, batch_size=16, lr=1e-3, optimizer="adam"), images())
    assert t.optimizers["discriminator"].param_groups[0]["lr"] == pytest.approx(2e-3)
    assert t.optimizers["generator"].param_groups[0]["lr"] == pytest.approx(1e-3)
    g_ids = {id(p) for _, p in gan.generator_parameters()}
    assert {id(p) for grp in t.optimizers["generator"].param_groups for p in grp["params"]} == g_ids
    assert not g_ids & {id(p) for grp in t.optimizers["discriminator"].param_groups for p in grp["params"]}
    t.fit()
    after = gan.state_dict()
    moved = {k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])}
    assert any(k.startswith("generator.") for k in moved) and any(k.startswith("discriminator.") for k in moved)
    assert all(p.grad is None for p in gan.parameters())  # nothing left over for the next step


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_both_players(train_config, precision):
    """Autocast in both players' forwards; fp16 scales each player's loss with its own GradScaler."""
    torch.manual_seed(0)
    gan = create_model("dcgan", **TINY)
    before = {k: v.clone() for k, v in gan.state_dict().items()}
    t = AdversarialTrainer(gan, train_config(max_steps=3, batch_size=16, lr=1e-3, optimizer="adam",
                                             precision=precision), images())
    dtypes = []
    gan.discriminator.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    t.fit()
    assert set(dtypes) == {torch.bfloat16 if precision == "bf16" else torch.float16}
    assert {p: s.is_enabled() for p, s in t.scalers.items()} == dict.fromkeys(t.scalers, precision == "fp16")
    if precision == "fp16":
        assert t.scalers["discriminator"] is not t.scalers["generator"]
        assert t.state_dict()["adversarial"]["discriminator_scaler"]["scale"] > 0  # saved for resume
    after = gan.state_dict()
    moved = {k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])}
    assert any(k.startswith("generator.") for k in moved) and any(k.startswith("discriminator.") for k in moved)
    assert all(p.dtype == torch.float32 for p in gan.parameters())  # master weights stay fp32


@pytest.mark.parametrize("loss", ["non_saturating", "hinge"])
def test_losses_are_the_papers(loss):
    torch.manual_seed(0)
    gan = create_model("dcgan", **TINY, loss=loss).eval()
    batch = {"x": torch.rand(6, 1, 8, 8)}
    torch.manual_seed(1)
    d = gan.discriminator_loss(batch)
    torch.manual_seed(1)
    z = torch.randn(6, 8)
    d_real, d_fake = gan.discriminator(batch["x"] * 2 - 1), gan.discriminator(gan.generator(z))
    if loss == "hinge":
        expected = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
    else:
        expected = -(F.logsigmoid(d_real).mean() + F.logsigmoid(-d_fake).mean())
    assert d.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.manual_seed(2)
    g = gan.generator_loss(batch)
    torch.manual_seed(2)
    d_fake = gan.discriminator(gan.generator(torch.randn(6, 8)))
    expected = -d_fake.mean() if loss == "hinge" else -F.logsigmoid(d_fake).mean()
    assert g.item() == pytest.approx(expected.item(), rel=1e-5)


def test_spectral_norm_and_conditioning_build_and_sample():
    gan = create_model("dcgan_sn", **TINY, conditional=True, num_classes=10).eval()
    assert hasattr(gan.discriminator.head, "parametrizations")
    a = gan.sample(4, generator=torch.Generator().manual_seed(0), labels=torch.tensor([0, 1, 2, 3]))
    b = gan.sample(4, generator=torch.Generator().manual_seed(0), labels=torch.tensor([0, 1, 2, 3]))
    c = gan.sample(4, generator=torch.Generator().manual_seed(0), labels=torch.tensor([4, 4, 4, 4]))
    assert a.shape == (4, 1, 8, 8) and torch.equal(a, b) and not torch.equal(a, c)
    assert 0 <= a.min() and a.max() <= 1


def test_grad_accum_is_refused(train_config):
    with pytest.raises(ConfigError, match=r"train\.grad_accum"):
        AdversarialTrainer(create_model("dcgan", **TINY), train_config(max_steps=1, grad_accum=2), images())


# --- kill -9 and resume, through the CLI --------------------------------------------------------------------------


def write_gan_config(path: Path, steps: int) -> Path:
    cfg = {"name": "gan", "data": {"name": "digits", "task": "generation", "test_fraction": 0.2, "val_size": 0.1},
           "model": {"name": "dcgan", **TINY},
           "train": {"max_steps": steps, "batch_size": 16, "optimizer": "adam", "lr": 2e-4, "betas": [0.5, 0.999],
                     "checkpoint_every": 5, "eval_every": 12, "log_every": 1, "progress": False,
                     "tensorboard": False, "seed": 0}}
    path.write_text(yaml.safe_dump(cfg))
    return path


def gan_rows(run: Path) -> dict:
    return {(r["step"], r.get("split", "train")): (r.get("d_loss"), r.get("g_loss"), r.get("val/loss"))
            for r in train_rows(run)}


def test_kill9_then_resume_is_bitwise_for_both_players(tmp_path):
    cfg = write_gan_config(tmp_path / "gan.yaml", steps=60)
    run_cli("train", str(cfg), "--run-dir", str(tmp_path / "ref"), cwd=tmp_path, check=True)
    run = tmp_path / "killed"
    proc = subprocess.Popen(dlforge_cmd("train", str(cfg), "--run-dir", str(run)), cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    end = time.time() + 120
    while time.time() < end and proc.poll() is None:  # past a checkpoint or two, then SIGKILL
        if (run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text().count("\n") >= 23:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    checkpoints = sorted(run.glob("checkpoints/checkpoint-*"))
    state = load_checkpoint(checkpoints[-1])
    assert state["adversarial"]["discriminator_optimizer"]["state"]  # D's Adam moments are saved
    run_cli("train", "--resume", str(run), cwd=tmp_path, check=True)
    got, want = gan_rows(run), gan_rows(tmp_path / "ref")
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key] == value, f"{key}: {got[key]} != {value} (not bitwise equal)"
