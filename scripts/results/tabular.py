"""Write docs/results/tabular.md: the acceptance figures of the tabular presets, measured, with wall-clock.

For each preset: its test-split figure at the preset's own split (seed 0), the mean over split seeds 0-4, and a
scikit-learn baseline on exactly the same splits (LogisticRegression for classification, LinearRegression for
regression). Then the Trainer-overhead benchmark. Run with `make results` (or `python scripts/results/tabular.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from dlforge.cli.main import run_script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for resultstools: scripts/README.md
import resultstools  # noqa: E402

ROOT = resultstools.ROOT
PRESETS = [("breast-cancer-mlp", "accuracy", ">= 0.97"), ("wine-mlp", "accuracy", ">= 0.97"),
           ("diabetes-mlp", "r2", "within 0.03 of LinearRegression, or better")]
SEEDS = range(5)


def baseline(preset: str, seed: int) -> float:
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.metrics import accuracy_score, r2_score

    from dlforge.api import build_data
    from dlforge.config import load_config

    d = build_data(load_config(preset, [f"data.split_seed={seed}"]))
    xtr, ytr = d.train.tensors["x"].numpy(), d.train.tensors["y"].numpy()
    xte, yte = d.test.tensors["x"].numpy(), d.test.tensors["y"].numpy()
    if d.info["task"] == "regression":
        return float(r2_score(yte, LinearRegression().fit(xtr, ytr).predict(xte)))
    return float(accuracy_score(yte, LogisticRegression(max_iter=5000).fit(xtr, ytr).predict(xte)))


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # --help, no options
    warnings.filterwarnings("ignore")
    from dlforge.api import train

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset, metric, target in PRESETS:
            ours, base, walls = [], [], []
            for seed in SEEDS:
                t0 = time.perf_counter()
                r = train(preset, [f"data.split_seed={seed}", "train.progress=false", f"runs_dir={tmp}"])
                walls.append(time.perf_counter() - t0)
                ours.append(r.metrics["test"][metric])
                base.append(baseline(preset, seed))
            rows.append({"preset": preset, "metric": metric, "target": target, "seed0": ours[0],
                         "mean": statistics.mean(ours), "per_seed": ours, "baseline_seed0": base[0],
                         "baseline_mean": statistics.mean(base), "wall_s": walls[0]})
            print(json.dumps(rows[-1]), flush=True)
    bench = json.loads(subprocess.run([sys.executable, str(ROOT / "bench" / "trainer_overhead.py"), "--json"],
                                      capture_output=True, text=True, check=True).stdout)
    write(rows, bench)


def write(rows: list[dict], bench: dict) -> None:
    base_name = {"accuracy": "LogisticRegression", "r2": "LinearRegression"}
    lines = [
        "# Results: tabular presets",
        "",
        "Written by `scripts/results/tabular.py` (`make results`); do not edit by hand. Test split of each preset",
        "(`test_fraction` 0.2, stratified for classification), split seed 0 as in the preset, and the mean over split",
        "seeds 0-4. The baseline is scikit-learn on exactly the same split, features scaled the same way.",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads. Wall-clock is one whole `dlforge.train` "
        "(data, training, checkpoints, evaluation, plots, model card) at seed 0.",
        "",
        "| preset | metric | target | dlforge, seed 0 | dlforge, mean of 5 seeds | baseline | baseline seed 0 "
        "| baseline mean | wall-clock |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['preset']} | test {r['metric']} | {r['target']} | {r['seed0']:.4f} | {r['mean']:.4f} | "
                     f"{base_name[r['metric']]} | {r['baseline_seed0']:.4f} | {r['baseline_mean']:.4f} | "
                     f"{r['wall_s']:.1f} s |")
    lines += ["", "Per split seed (0-4):", ""]
    for r in rows:
        lines.append(f"- {r['preset']}: " + ", ".join(f"{v:.4f}" for v in r["per_seed"]))
    lines += [
        "",
        "## Trainer overhead",
        "",
        f"`python bench/trainer_overhead.py`: {bench['model']}, batch {bench['batch_size']}, "
        f"{bench['rounds']} paired rounds of {bench['steps_per_round']} steps, interleaved in one process.",
        "",
        "| median step, Trainer | median step, hand loop | ratio median | min | max | target |",
        "|---|---|---|---|---|---|",
        f"| {bench['median_step_ms_trainer']:.3f} ms | {bench['median_step_ms_hand']:.3f} ms | "
        f"{bench['ratio_median']:.3f} | {bench['ratio_min']:.3f} | {bench['ratio_max']:.3f} | <= 1.05 (goal 1.02) |",
        "",
    ]
    out = resultstools.RESULTS / "tabular.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    run_script(main)  # a DlforgeError: one line and exit code 2, as in the CLI
