"""Helpers for tests that run dlforge as a user would: in a subprocess, on files the test writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
WORKERS = max(2, min(4, os.cpu_count() or 2))


def dlforge_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "dlforge", *args]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300, check: bool = False):
    proc = subprocess.run(dlforge_cmd(*args), cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"dlforge {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_cli_here(capfd, *args: str) -> subprocess.CompletedProcess:
    """`dlforge ARGS` in this process, through the CLI's own parsing and error handling (`dlforge.cli.main.main`),
    without the seconds a new interpreter takes to import torch; `capfd` is the test's fixture."""
    import pytest

    from dlforge.cli.main import main

    capfd.readouterr()  # what came before is not this command's
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(["dlforge", *args], done.value.code or 0, out, err)


def run_all(commands: dict[str, list[str]], cwd: Path) -> dict[str, subprocess.CompletedProcess]:
    """Run independent `dlforge` commands side by side; key -> finished process."""
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = {key: pool.submit(run_cli, *args, cwd=cwd) for key, args in commands.items()}
        return {key: future.result() for key, future in futures.items()}


def ok_json(proc: subprocess.CompletedProcess):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The CLI's policy for a person's mistake: exit 2, one line on stderr starting with 'error:', no traceback."""
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def write_blobs_csv(path: Path, n: int = 200, features: int = 6, classes: int = 3, seed: int = 0) -> Path:
    """A small, learnable classification table: Gaussian blobs, one row per sample."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2.0, size=(classes, features))
    y = np.arange(n) % classes
    x = centers[y] + rng.normal(0, 1.0, size=(n, features))
    lines = [",".join([f"f{i}" for i in range(features)] + ["label"])]
    lines += [",".join([f"{v:.6f}" for v in row] + [f"class{c}"]) for row, c in zip(x, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_config(path: Path, csv: Path, **train) -> Path:
    cfg = {
        "name": "t",
        "data": {"name": "csv", "path": str(csv), "target": "label", "val_fraction": 0.1, "test_fraction": 0.1},
        "model": {"name": "mlp", "hidden": [32, 32], "dropout": 0.1},
        "train": {"max_steps": 60, "batch_size": 16, "lr": 0.01, "log_every": 1, "eval_every": 10,
                  "checkpoint_every": 5, "progress": False, "tensorboard": False, **train},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def train_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return rows


def losses(run_dir: Path) -> dict[tuple[int, str], float]:
    """(step, kind) -> loss value, for train rows and val rows, from metrics.jsonl."""
    out = {}
    for r in train_rows(run_dir):
        key = (r["step"], r.get("split", "train"))
        assert key not in out, f"step {key} logged twice in {run_dir}"
        out[key] = r["val/loss"] if "split" in r else r["loss"]
    return out
