"""Scale-out on PyTorch's engine: torchrun with 2 CPU processes (gloo) matches 1 process at the same global batch."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from clitools import ENV, losses, run_cli, write_blobs_csv, write_config
from test_adversarial import write_gan_config

from dlforge.train.checkpoint import find_checkpoints, load_checkpoint


def test_two_process_ddp_matches_one_process(tmp_path):
    csv = write_blobs_csv(tmp_path / "b.csv", n=200)  # 160 train rows: 10 step batches of 16, 8 per rank
    cfg = write_config(tmp_path / "c.yaml", csv, max_steps=30, checkpoint_every=10, eval_every=10)
    overrides = ["model.dropout=0.0", "train.optimizer=sgd", "train.lr=0.05"]  # no dropout: RNG streams differ per rank
    run_cli("train", str(cfg), *overrides, "--run-dir", str(tmp_path / "one"), cwd=tmp_path, check=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "dlforge", "train", str(cfg), *overrides, "--run-dir", str(tmp_path / "two")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run: ") == 1, proc.stdout  # rank 0 alone reports (issue 13, defect 23)

    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(one) == sorted(two)  # rank 0 alone logged, every step once
    for key in one:
        assert abs(one[key] - two[key]) < 1e-5, (key, one[key], two[key])

    a = load_checkpoint(find_checkpoints(tmp_path / "one" / "checkpoints")[-1])["model"]
    b = load_checkpoint(find_checkpoints(tmp_path / "two" / "checkpoints")[-1])["model"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    assert json.loads((tmp_path / "two" / "eval.json").read_text())["world_size"] == 2
    assert json.loads((tmp_path / "one" / "eval.json").read_text())["world_size"] == 1


def test_gan_trains_under_two_process_ddp(tmp_path):
    """The adversarial step's two forwards and backwards per step (D's leaves G unused) go through DDP."""
    cfg = write_gan_config(tmp_path / "gan.yaml", steps=10)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "dlforge", "train", str(cfg), "--run-dir", str(tmp_path / "two")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [r for r in map(json.loads, (tmp_path / "two" / "metrics.jsonl").read_text().splitlines())
            if "split" not in r]
    assert [r["step"] for r in rows] == list(range(1, 11))  # rank 0 alone logged, every step once
    assert all(abs(r["d_loss"]) < 100 and abs(r["g_loss"]) < 100 for r in rows)
    state = load_checkpoint(find_checkpoints(tmp_path / "two" / "checkpoints")[-1])
    assert state["adversarial"]["discriminator_optimizer"]["state"] and state["optimizer"]["state"]
    assert json.loads((tmp_path / "two" / "eval.json").read_text())["world_size"] == 2
