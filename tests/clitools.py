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


def run_here(capsys, *args: str) -> subprocess.CompletedProcess:
    """Run `dlforge ARGS` in this process, as `run_cli` would in another (exit code, stdout, stderr), without paying
    for a new process's imports; `capsys` is pytest's fixture. The terminal is 80 columns wide, as rich sees it."""
    from dlforge.cli.main import main

    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out = capsys.readouterr()
    return subprocess.CompletedProcess(["dlforge", *args], code, out.out, out.err)


def run_all(commands: dict[str, list[str]], cwd: Path) -> dict[str, subprocess.CompletedProcess]:
    """Run independent `dlforge` commands side by side; key -> finished process."""
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = {key: pool.submit(run_cli, *args, cwd=cwd) for key, args in commands.items()}
        return {key: future.result() for key, future in futures.items()}


# What a command that fails on its arguments must not have imported yet: the heavy libraries (seconds to load)
HEAVY_MODULES = frozenset({"torch", "torchmetrics", "scipy", "sklearn", "transformers", "matplotlib", "cv2", "pandas"})

_ONE_PROCESS = """
import contextlib, io, json, sys
from dlforge.cli.main import main

startup = sorted({name.split(".")[0] for name in sys.modules})
results = {}
for key, args in json.load(sys.stdin).items():
    out, err, before = io.StringIO(), io.StringIO(), set(sys.modules)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    loaded = sorted({name.split(".")[0] for name in set(sys.modules) - before})
    results[key] = {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(), "loaded": loaded}
sys.__stdout__.write(json.dumps({"startup": startup, "results": results}))
"""


def run_in_one_process(commands: dict[str, list[str]], cwd: Path, timeout: float = 300,
                       env: dict[str, str] | None = None
                       ) -> tuple[dict[str, tuple[subprocess.CompletedProcess, list[str]]], list[str]]:
    """Run `dlforge` commands one after the other in one fresh Python process, through the CLI's `main` (one
    interpreter start for them all: cheap when they fail early). Returns key -> (the command as a finished process,
    for `one_line_error`; the top-level modules it imported), and the modules imported with the CLI itself. `env`:
    the process's environment variables on top of `ENV`."""
    proc = subprocess.run([sys.executable, "-c", _ONE_PROCESS], input=json.dumps(commands), cwd=cwd,
                          env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"the commands' process failed:\n{proc.stderr}"
    report = json.loads(proc.stdout)
    results = {key: (subprocess.CompletedProcess(["dlforge", *commands[key]], r["code"], r["stdout"], r["stderr"]),
                     r["loaded"]) for key, r in report["results"].items()}
    return results, report["startup"]


def run_together(commands: dict[str, list[str]], cwd: Path, env: dict[str, str] | None = None
                 ) -> dict[str, subprocess.CompletedProcess]:
    """`run_in_one_process` without the imported modules: key -> the command as a finished process. For commands
    that only read, or fail on their input: one start of torch and the catalog for them all, instead of one each."""
    results, _ = run_in_one_process(commands, cwd, env=env)
    return {key: proc for key, (proc, _) in results.items()}


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
