"""The image, forecast and text-generation commands as a user runs them: `python -m dlforge ...` in a subprocess
(or several commands through the CLI in one fresh process, `run_together`: one start of torch for them)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from clitools import run_cli, run_together

PNG = b"\x89PNG"


def test_image_ops_through_the_main_cli(tmp_path):
    import cv2

    img = np.zeros((32, 40, 3), np.uint8)
    img[8:24, 10:30] = 255
    src, out = tmp_path / "in.png", tmp_path / "edges.png"
    cv2.imwrite(str(src), img)
    proc = run_cli("image", "ops", str(src), str(out), "--op", "grayscale", "--op", "canny:low=50,high=150", "--json")
    assert proc.returncode == 0, proc.stderr
    edges = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(edges, cv2.Canny(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), 50, 150))
    assert json.loads(proc.stdout)["ops"][1]["op"] == "canny"
    missing = run_cli("image", "ops", str(tmp_path / "nope.png"), str(out))
    assert missing.returncode == 2 and "nope.png" in missing.stderr and "Traceback" not in missing.stderr
    bad = run_cli("image", "ops", str(src), str(out), "--op", "blurr")
    assert bad.returncode == 2 and "blurr" in bad.stderr


@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("char")
    proc = run_cli("train", "shakespeare-char-lstm", "train.max_steps=3", "train.warmup_steps=0", "data.limit=32",
                   "model.dim=32", "model.n_layers=1", "train.progress=false", "train.tensorboard=false",
                   f"runs_dir={root / 'runs'}", "--json", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root, json.loads(proc.stdout)


def test_char_run_reports_perplexity_and_generates_from_the_cli(char_run):
    root, out = char_run
    test = out["metrics"]["test"]
    assert test["perplexity"] == pytest.approx(np.exp(test["loss"]), rel=1e-4)
    args = ["generate", out["run_dir"], "--prompt", "ROMEO:", "--max-new-tokens", "20", "--seed", "1",
            "--temperature", "0.8"]
    procs = run_together({"json": [*args, "--json"], "streamed": args}, cwd=root)  # one process for these two
    proc, streamed = procs["json"], procs["streamed"]
    assert proc.returncode == 0, proc.stderr
    gen = json.loads(proc.stdout)
    assert gen["prompt"] == "ROMEO:" and gen["stop_reason"] == "max_new_tokens" and gen["tokens"] == 20
    again = run_cli(*args, "--json", cwd=root)  # another process
    assert json.loads(again.stdout)["completion"] == gen["completion"]  # same seed, same text
    assert streamed.returncode == 0 and gen["completion"] in streamed.stdout


def test_forecast_run_from_a_users_csv_with_gaps(tmp_path):
    t = np.arange(400)
    values = 10 + 0.05 * t + np.sin(2 * np.pi * t / 12)
    lines = ["date,sales"]
    for i in range(400):
        if i in (50, 51, 200):  # missing rows: interpolated onto the daily grid
            continue
        day = np.datetime64("2020-01-01") + i
        lines.append(f"{day},{'' if i == 300 else f'{values[i]:.4f}'}")  # and one empty value
    csv = tmp_path / "sales.csv"
    csv.write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "sales.yaml"
    cfg.write_text(f"""
name: sales
data: {{name: timeseries_csv, path: {csv}, time_column: date, window: 24, horizon: 3, season: 12, test_size: 48,
       val_size: 48}}
model: {{name: gru_forecaster, dim: 16, n_layers: 1, residual: true}}
train: {{max_steps: 30, batch_size: 32, lr: 0.01, progress: false, tensorboard: false, eval_every: 10}}
""")
    strict = tmp_path / "strict.yaml"
    strict.write_text(cfg.read_text().replace("val_size: 48}", "val_size: 48, fill: error}"))
    procs = run_together({"train": ["train", str(cfg), "--json"], "strict": ["train", str(strict)]}, cwd=tmp_path)
    proc, refused = procs["train"], procs["strict"]
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    test = out["metrics"]["test"]
    assert {"mae", "rmse", "mape", "mase", "naive_mae", "rel_mae"} <= set(test)
    assert test["rel_mae"] == pytest.approx(test["mae"] / test["naive_mae"], rel=1e-6)
    assert (tmp_path / out["run_dir"] / "plots" / "forecast.png").read_bytes().startswith(PNG)
    assert refused.returncode == 2 and "sales.csv" in refused.stderr and "Traceback" not in refused.stderr
