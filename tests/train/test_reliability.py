"""Crash safety, end to end: kill -9 and resume, SIGTERM (in the loop and after it), damaged checkpoints, a log cut
short, a full disk, two processes on one run folder."""

from __future__ import annotations

import os
import random
import re
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest
from clitools import (
    ENV,
    dlforge_cmd,
    losses,
    one_line_error,
    run_cli,
    run_here,
    train_rows,
    write_blobs_csv,
    write_config,
)

from dlforge import api
from dlforge.errors import DlforgeError, TrainingError
from dlforge.runs.registry import RunRegistry
from dlforge.runs.rundir import read_metrics

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
        try:
            if path.read_text().count("\n") >= n:
                return True
        except FileNotFoundError:  # not written yet, or being replaced (a resume rewrites it to its checkpoint's step)
            pass
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


def test_nan_loss_stop_names_the_step_and_leaves_no_nan_checkpoint(tmp_path, monkeypatch, capsys):
    csv = write_blobs_csv(tmp_path / "b.csv", n=120)
    cfg = write_config(tmp_path / "c.yaml", csv, max_steps=40, lr=1e6, optimizer="sgd", momentum=0.0,
                       checkpoint_every=1)
    monkeypatch.chdir(tmp_path)
    proc = run_here(capsys, "train", str(cfg), "model.dropout=0.0", "--run-dir", str(tmp_path / "r"))  # in-process
    assert proc.returncode == 2, proc.stderr
    assert "loss is" in proc.stderr and "at step" in proc.stderr and "Traceback" not in proc.stderr
    import torch

    from dlforge.train.checkpoint import find_checkpoints, load_checkpoint

    for ck in find_checkpoints(tmp_path / "r" / "checkpoints"):
        state = load_checkpoint(ck)
        assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


# --- issue 13: nothing is lost, errors stay honest, long work shows progress -----------------------------------------


def test_one_process_writes_a_run_and_a_long_training_reports_progress_off_a_terminal(tmp_path, monkeypatch,
                                                                                        capsys):
    """Defect 27: two --resume of one run, or one --run-dir started twice, interleaved metrics.jsonl. Defect 10:
    outside a terminal, train printed evaluation lines only."""
    csv = write_blobs_csv(tmp_path / "b.csv", n=120)
    cfg = write_config(tmp_path / "c.yaml", csv, max_steps=300, log_every=50, eval_every=100, checkpoint_every=100)
    run = tmp_path / "r"
    first = subprocess.Popen(dlforge_cmd("train", str(cfg), "train.progress=true", "train.progress_every=0.3",
                                         "--run-dir", str(run)),
                             cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_rows(run, 2, first)
    first.send_signal(signal.SIGSTOP)  # paused while it holds the run: the others get the CPU
    try:
        monkeypatch.chdir(tmp_path)
        second = run_here(capsys, "train", "--resume", str(run))  # the CLI, in this test's process
        assert f"{run}: another dlforge process (pid {first.pid}) is writing this run" in one_line_error(second)
        with pytest.raises(DlforgeError, match=rf"\(pid {first.pid}\)"):  # the same --run-dir again
            api.train(str(cfg), run_dir=run)
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    steps = [r["step"] for r in train_rows(run) if "split" not in r]
    assert steps == sorted(set(steps)) and steps[-1] == 300  # each row once, in order: one writer
    progress = [line for line in err.splitlines() if line.startswith("train: ")]
    assert progress, err[-2000:]
    assert re.fullmatch(r"train: \d+/300 steps \(\d+%\), [\d.]+ steps/s, ETA .+, loss \d+\.\d{4}", progress[-1])


def test_a_resume_after_the_log_lost_its_tail_keeps_its_valid_rows_and_finishes(tmp_path):
    """Defect 28: a log shorter than the checkpoint says was padded with NUL bytes; the run then failed at its end
    on invalid JSON, and so did every later resume."""
    csv = write_blobs_csv(tmp_path / "b.csv", n=120)
    cfg = write_config(tmp_path / "c.yaml", csv, max_steps=20, checkpoint_every=10, eval_every=10)
    run = tmp_path / "r"
    api.train(str(cfg), run_dir=run)
    for gone in ("checkpoints/checkpoint-20", "model", "eval.json"):  # as if killed between steps 10 and 20
        os.system(f"rm -r {run / gone}")
    log = run / "metrics.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:5]) + lines[5][:7])  # a power cut: 5 rows and a torn sixth survived
    result = api.train(None, resume=run)
    assert result.status == "completed"
    rows = read_metrics(log)  # valid JSON, every line
    assert [r["step"] for r in rows if "split" not in r] == [1, 2, 3, 4, 5, *range(11, 21)]
    assert b"\0" not in log.read_bytes()


def _signalled_during_evaluation(signum: int):
    """api's evaluate_model, which first sends this process `signum`: a signal in the middle of the final
    evaluation, after the training loop."""
    evaluate = api.evaluate_model

    def evaluate_model(*args, **kwargs):
        os.kill(os.getpid(), signum)
        return evaluate(*args, **kwargs)

    return evaluate_model


def test_a_signal_during_the_final_evaluation_marks_the_run_interrupted_and_a_resume_finishes_it(tmp_path,
                                                                                              monkeypatch):
    """Defect 30: SIGTERM there killed the process (-15) and SIGINT exited 130 silently; the run stayed running."""
    csv = write_blobs_csv(tmp_path / "b.csv", n=120)
    cfg = write_config(tmp_path / "c.yaml", csv, max_steps=10, checkpoint_every=5, eval_every=5)
    run, registry = tmp_path / "r", RunRegistry(tmp_path)
    handler = signal.getsignal(signal.SIGTERM)
    for signum, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        monkeypatch.setattr(api, "evaluate_model", _signalled_during_evaluation(signum))
        result = api.train(str(cfg), run_dir=run) if signum == signal.SIGTERM else api.train(None, resume=run)
        assert (result.status, result.stop_reason, result.exit_code) == ("interrupted", signum.name, code)
        assert registry.get("r")["status"] == "interrupted" and not (run / "eval.json").exists()
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGTERM) is handler  # the handlers are put back
    result = api.train(None, resume=run)
    assert result.status == "completed" and (run / "eval.json").exists()
    assert registry.get("r")["status"] == "completed"


def test_a_failed_run_that_cannot_be_marked_failed_still_reports_its_own_error(tmp_path, monkeypatch, capsys):
    """Defect 29: when the disk was full, the error blamed registry.db (which could not record the failure) instead
    of the write that had failed."""
    csv = write_blobs_csv(tmp_path / "b.csv", n=120)
    cfg = write_config(tmp_path / "c.yaml", csv, max_steps=40, lr=1e6, optimizer="sgd", momentum=0.0)

    def disk_full(self, name, status, metrics):
        raise DlforgeError(f"{self.path}: database or disk is full")

    monkeypatch.setattr(RunRegistry, "finish", disk_full)
    with pytest.raises(TrainingError, match="loss is"):
        api.train(str(cfg), ["model.dropout=0.0"], run_dir=tmp_path / "r")
    assert "warning: the run could not be marked failed" in capsys.readouterr().err


def test_a_full_disk_names_the_checkpoint_it_could_not_write_and_marks_the_run_failed(tmp_path):
    """Defect 29: the error was a generic exit 1 naming no file, and the run stayed running. A file size limit
    (ulimit -f) fails the checkpoint's write at the OS as a full disk does."""
    csv = write_blobs_csv(tmp_path / "b.csv", n=120)
    cfg = write_config(tmp_path / "c.yaml", csv, max_steps=20, checkpoint_every=2, eval_every=100)
    limit = 1_000_000  # the checkpoint of a 512x512 MLP with Adam's moments takes about 3.2 MB

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ: the write fails instead

    run = tmp_path / "r"
    proc = subprocess.run(dlforge_cmd("train", str(cfg), "model.hidden=[512,512]", "--run-dir", str(run)),
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300,
                          preexec_fn=limit_file_size)
    line = one_line_error(proc)
    assert re.search(rf"{run / 'checkpoints' / 'checkpoint-2'}: could not be written: the file size limit was "
                     r"reached \(needs about 3\.\d MB; .* free there\); raise it \(ulimit -f\)", line), line
    assert RunRegistry(tmp_path).get("r")["status"] == "failed"
