"""Write docs/results/classic.md: the CNN and RNN acceptance figures, each measured by a real `dlforge train`.

    python scripts/results/classic.py fashion-resnet co2-lstm ...   # train these presets, record, re-render
    python scripts/results/classic.py --bench                        # run bench/cnn_step.py and bench/lstm_step.py
    python scripts/results/classic.py                                # re-render from the records only

Each preset runs as `dlforge train PRESET --json` in a subprocess on this machine; its test figures and the
wall-clock of the whole command (data, training, evaluation, plots) are kept in docs/results/classic.json, so a
figure is re-measured only when asked. `make results-classic` measures everything (about an hour on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

from dlforge.cli.main import run_script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for resultstools: scripts/README.md
import resultstools  # noqa: E402

RECORDS = resultstools.RESULTS / "classic.json"
OUT = resultstools.RESULTS / "classic.md"

# preset -> (headline metric on the test split, acceptance target)
TARGETS = {
    "fashion-resnet": ("accuracy", ">= 0.935 within 20 min (goal 0.945)"),
    "fashion-simplecnn": ("accuracy", ">= 0.91"),
    "fashion-mlp": ("accuracy", ">= 0.885"),
    "fashion-lenet5": ("accuracy", "(reference)"),
    "digits-cnn": ("accuracy", ">= 0.98"),
    "fashion-pretrain5": ("accuracy", "(transfer source, classes 0-4)"),
    "fashion-transfer1pct": ("accuracy", "> fashion-scratch1pct"),
    "fashion-scratch1pct": ("accuracy", "(baseline for transfer)"),
    "co2-lstm": ("mase", "< 1.0 (goal < 0.7)"),
    "co2-gru": ("mase", "< 1.0 (goal < 0.7)"),
    "sunspots-lstm": ("mase", "(reference)"),
    "seattle-temps-gru": ("mase", "(reference)"),
    "seattle-weather-lstm": ("accuracy", "(reference; see baselines)"),
    "shakespeare-char-lstm": ("bits_per_char", "(reference)"),
}
FORECAST_EXTRA = ("rel_mae", "naive_mase", "mae", "naive_mae")
BENCHES = ("cnn_step", "lstm_step")


def load() -> dict:
    return resultstools.load(RECORDS, {"presets": {}, "bench": {}})


def render(records: dict) -> str:
    lines = [
        "# Results: CNNs and RNNs",
        "",
        "Written by `scripts/results/classic.py` (`make results-classic`); do not edit by hand. Each figure is the",
        "test split of one `dlforge train PRESET` run on this machine; wall-clock is the whole command (data,",
        "training, evaluation, plots, model card).",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}.",
        "",
        "| preset | test metric | value | target | steps | wall-clock | measured |",
        "|---|---|---|---|---|---|---|",
    ]
    presets = records["presets"]
    for preset, (metric, target) in TARGETS.items():
        r = presets.get(preset)
        if r is None:
            continue
        value = r["test"].get(metric)
        shown = f"{value:.4f}" if isinstance(value, int | float) else "—"
        lines.append(f"| {preset} | {metric} | {shown} | {target} | {r['steps']} | {r['wall_s'] / 60:.1f} min | "
                     f"{r['measured']} |")
    forecasts = [p for p in TARGETS if p in presets and "naive_mase" in presets[p]["test"]]
    if forecasts:
        lines += ["", "## Forecasts against the seasonal naive (test tail)", "",
                  "MASE is the mean absolute error over the in-sample mean absolute seasonal difference",
                  "(Hyndman & Koehler 2006); rel_mae is the error over the seasonal naive's on the same held-out",
                  "targets (below 1: better than the seasonal naive).", "",
                  "| preset | MASE | seasonal naive MASE | rel_mae | MAE | seasonal naive MAE |",
                  "|---|---|---|---|---|---|"]
        for p in forecasts:
            t = presets[p]["test"]
            lines.append(f"| {p} | {t['mase']:.3f} | {t['naive_mase']:.3f} | {t['rel_mae']:.3f} | {t['mae']:.3f} | "
                         f"{t['naive_mae']:.3f} |")
    if "fashion-transfer1pct" in presets and "fashion-scratch1pct" in presets:
        a = presets["fashion-transfer1pct"]["test"]["accuracy"]
        b = presets["fashion-scratch1pct"]["test"]["accuracy"]
        lines += ["", "## Transfer learning", "",
                  "Five Fashion-MNIST classes (Sandal, Shirt, Sneaker, Bag, Ankle boot) with 1% of their training",
                  "labels, test accuracy over those classes' 5,000 test images:", "",
                  "| from the fashion-pretrain5 backbone | from scratch | difference |", "|---|---|---|",
                  f"| {a:.4f} | {b:.4f} | {a - b:+.4f} |"]
    if records["bench"]:
        lines += ["", "## Training throughput against plain PyTorch", "",
                  "`python bench/<name>.py`: dlforge model through the Trainer against the same architecture as a",
                  "plain module and loop, interleaved in one process; samples/s ratio dlforge/plain (target >= 0.97).",
                  "",
                  "| benchmark | model | batch | rounds | dlforge samples/s | plain samples/s | ratio median | min "
                  "| max |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name in BENCHES:
            b = records["bench"].get(name)
            if b:
                lines.append(f"| {name} | {b['model']} | {b['batch_size']} | {b['rounds']} | "
                             f"{b['samples_per_s_dlforge']:.1f} | {b['samples_per_s_baseline']:.1f} | "
                             f"{b['ratio_median']:.3f} | {b['ratio_min']:.3f} | {b['ratio_max']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("presets", nargs="*", help="presets to train and record ('all': every one in the table)")
    ap.add_argument("--bench", action="store_true", help="run the throughput benchmarks too")
    args = ap.parse_args()
    records = load()
    presets = list(TARGETS) if args.presets == ["all"] else args.presets
    for preset in presets:
        if preset not in TARGETS:
            raise SystemExit(f"{preset}: not in this table; expected one of {', '.join(TARGETS)}")
        records["presets"][preset] = resultstools.run_preset(preset)
        resultstools.save(RECORDS, records)
        print(json.dumps({preset: records["presets"][preset]["test"]}), flush=True)
    if args.bench:
        for name in BENCHES:
            records["bench"][name] = resultstools.run_bench(name)
            resultstools.save(RECORDS, records)
    OUT.write_text(render(records))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    run_script(main)  # a DlforgeError: one line and exit code 2, as in the CLI
