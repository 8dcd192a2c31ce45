"""Crash safety, end to end through the CLI: kill -9 and resume, SIGTERM, damaged checkpoints."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from clitools import ENV, dlforge_cmd, losses, run_cli, train_rows, write_blobs_csv, write_config

MAX_STEPS = 150


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("reliab")
    csv = write_blobs_csv(d / "blobs.csv", n=300)
    # two DataLoader workers: the resume must also be exact with worker processes
    cfg = write_config(d / "cfg.yaml", csv, max_steps=MAX_STEPS, checkpoint_every=7, eval_every=9)
    ref = d / "reference"
    run_cli("train", str(cfg), "data.num_workers=2", "--run-dir", str(ref), cwd=d, check=True)
    return d, cfg, ref


def _wait_rows(run_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> bool:
    path = run_dir / "metrics.jsonl"
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            return False
        if path.exists() and path.read_text().count("\n") >= n:
            return True
        time.sleep(0.005)
    raise AssertionError(f"no {n} rows in {path} within {timeout} s")


def test_kill9_at_random_steps_then_resume_is_bitwise_identical(setup):
    d, cfg, ref = setup
    run = d / "killed"
    rng = random.Random(1234)
    args = ["train", str(cfg), "data.num_workers=2", "--run-dir", str(run)]
    kills = 0
    for target in sorted(rng.sample(range(5, MAX_STEPS), 3)):
        proc = subprocess.Popen(dlforge_cmd(*args), cwd=d, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if _wait_rows(run, target, proc):
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        args = ["train", "--resume", str(run)]
    assert kills >= 2, "the run finished before it could be killed: make steps slower"
    run_cli(*args, cwd=d, check=True)
    got, want = losses(run), losses(ref)
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key] == value, f"{key}: {got[key]!r} != {value!r} (not bitwise equal)"


def test_sigterm_checkpoints_and_resumes_at_that_step(setup):
    d, cfg, ref = setup
    run = d / "termed"
    # slow the steps a little (a large batch of a wide model) so the signal lands mid-run
    proc = subprocess.Popen(dlforge_cmd("train", str(cfg), "--run-dir", str(run)), cwd=d, env={**ENV, "COLUMNS": "30"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # a narrow terminal
    assert _wait_rows(run, 20, proc)
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert time.time() - t0 < 30
    assert proc.returncode == 143, err  # 128 + SIGTERM, as a shell reports a process ended by it
    assert "Traceback" not in err
    rows = [r for r in train_rows(run) if "split" not in r]
    stopped_at = rows[-1]["step"]
    assert stopped_at < MAX_STEPS
    assert (run / "checkpoints" / f"checkpoint-{stopped_at}" / "manifest.json").exists()
    assert f"continue with: dlforge train --resume {run}\n" in out  # the command to copy, on one line
    resumed = run_cli("train", "--resume", str(run), "--json", cwd=d, check=True)
    assert '"status": "completed"' in resumed.stdout
    got, want = losses(run), losses(ref)
    after = [k for k in want if k[0] > stopped_at]
    assert after and all(got[k] == want[k] for k in want)


def test_damaged_newest_checkpoint_falls_back_with_warning(setup):
    d, cfg, _ = setup
    run = d / "damaged"
    run_cli("train", str(cfg), "train.max_steps=30", "train.checkpoint_every=10", "train.keep_checkpoints=3",
            "--run-dir", str(run), cwd=d, check=True)
    newest = run / "checkpoints" / "checkpoint-30" / "state.safetensors"
    newest.write_bytes(newest.read_bytes()[:-100])  # truncated
    proc = run_cli("train", "--resume", str(run), "train.max_steps=40", "--json", cwd=d)
    assert proc.returncode == 0, proc.stderr
    assert "checkpoint-30" in proc.stderr and "state.safetensors" in proc.stderr
    steps = [r["step"] for r in train_rows(run) if "split" not in r]
    assert steps == list(range(1, 41))  # rows 21..30 written again from checkpoint-20, then 31..40


def test_nan_loss_stop_names_the_step_and_leaves_no_nan_checkpoint(tmp_path):
    csv = write_blobs_csv(tmp_path / "b.csv", n=120)
    cfg = write_config(tmp_path / "c.yaml", csv, max_steps=40, lr=1e6, optimizer="sgd", momentum=0.0,
                       checkpoint_every=1)
    proc = run_cli("train", str(cfg), "model.dropout=0.0", "--run-dir", str(tmp_path / "r"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "loss is" in proc.stderr and "at step" in proc.stderr and "Traceback" not in proc.stderr
    import torch

    from dlforge.train.checkpoint import find_checkpoints, load_checkpoint

    for ck in find_checkpoints(tmp_path / "r" / "checkpoints"):
        state = load_checkpoint(ck)
        assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
