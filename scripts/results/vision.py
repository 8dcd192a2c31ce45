"""Write docs/results/vision.md: the vision acceptance figures of issue 14, each measured by a real `dlforge train`.

    python scripts/results/vision.py canvas-unet canvas-detector ...   # train these presets, record, re-render
    python scripts/results/vision.py all --bench                       # everything, with the benchmarks
    python scripts/results/vision.py                                   # re-render from the records only

Each preset runs as `dlforge train PRESET --json` in a subprocess on this machine; its test figures (and, for the
segmentation preset, the per-class IoU of the run's eval.json) and the wall-clock of the whole command (canvas
generation, training, evaluation, plots) are kept in docs/results/vision.json, so a figure is re-measured only when
asked. `make results-vision` measures everything (about two hours on 2 CPU cores).
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

RECORDS = resultstools.RESULTS / "vision.json"
OUT = resultstools.RESULTS / "vision.md"

# preset -> [(test metric, target)], wall-clock limit in minutes (the issue's)
TARGETS = {
    "fashion-vit": ([("accuracy", ">= 0.89 (goal 0.905)")], 30),
    "canvas-unet": ([("miou", ">= 0.80"), ("pixel_accuracy", ">= 0.97"), ("mean_dice", "")], 20),
    "canvas-detector": ([("map_50", ">= 0.85"), ("map", ">= 0.55"), ("map_75", ""), ("mar_100", "")], 30),
    "canvas-maskdet": ([("mask_map", ">= 0.45"), ("map_50", ">= 0.85"), ("map", ">= 0.55"), ("mask_map_50", "")],
                       30),
}
BENCHES = {"coco_map": [], "vit_step": []}


def load() -> dict:
    return resultstools.load(RECORDS, {"presets": {}, "bench": {}})


def _shown(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "—"


def render(records: dict) -> str:
    lines = [
        "# Results: vision beyond classification",
        "",
        "Written by `scripts/results/vision.py` (`make results-vision`); do not edit by hand. Each figure is the",
        "test split of one `dlforge train PRESET` run on this machine (test canvases are made of Fashion-MNIST test",
        "items only); wall-clock is the whole command (canvas generation, training, evaluation, plots, model card).",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}.",
        "",
        "| preset | test metric | value | target | steps | wall-clock (limit) | measured |",
        "|---|---|---|---|---|---|---|",
    ]
    presets = records["presets"]
    for preset, (metrics, limit) in TARGETS.items():
        r = presets.get(preset)
        if r is None:
            lines.append(f"| {preset} | — | not measured yet | | | ({limit} min) | |")
            continue
        wall = f"{r['wall_s'] / 60:.1f} min ({limit} min)"
        for i, (metric, target) in enumerate(metrics):
            head = (preset, r["steps"], wall, r["measured"]) if i == 0 else ("", "", "", "")
            lines.append(f"| {head[0]} | {metric} | {_shown(r['test'].get(metric))} | {target} | {head[1]} | "
                         f"{head[2]} | {head[3]} |")
    per_class = presets.get("canvas-unet", {}).get("per_class")
    if per_class:
        lines += ["", "## Segmentation: per-class IoU (canvas-unet, test canvases)", "",
                  "| class | IoU | Dice | pixels |", "|---|---|---|---|"]
        for name, row in per_class.items():
            lines.append(f"| {name} | {_shown(row.get('iou'))} | {_shown(row.get('dice'))} | {row.get('pixels')} |")
    if records["bench"]:
        lines += ["", "## Benchmarks", "",
                  "`python bench/<name>.py --json`, dlforge and its baseline interleaved in one process; the ratio",
                  "is dlforge's speed over the baseline's (median, min, max over the rounds).", "",
                  "| benchmark | ratio median | min | max |", "|---|---|---|---|"]
        for name, b in records["bench"].items():
            lines.append(f"| {name} | {_shown(b.get('ratio_median'))} | {_shown(b.get('ratio_min'))} | "
                         f"{_shown(b.get('ratio_max'))} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("presets", nargs="*", help="presets to train and record ('all': every one in the table)")
    ap.add_argument("--bench", action="store_true", help="run the benchmarks too")
    args = ap.parse_args()
    records = load()
    presets = list(TARGETS) if args.presets == ["all"] else args.presets
    for preset in presets:
        if preset not in TARGETS:
            raise SystemExit(f"{preset}: not in this table; expected one of {', '.join(TARGETS)}")
        record = resultstools.run_preset(preset)
        eval_json = json.loads((resultstools.ROOT / record["run_dir"] / "eval.json").read_text())
        if "test_per_class" in eval_json:
            record["per_class"] = eval_json["test_per_class"]
        records["presets"][preset] = record
        resultstools.save(RECORDS, records)
        print(json.dumps({preset: record["test"]}), flush=True)
    if args.bench:
        for name, bench_args in BENCHES.items():
            result = resultstools.run_bench(name, bench_args)
            rows = result if isinstance(result, list) else [result]  # coco_map: one row per IoU type
            for row in rows:
                records["bench"][" ".join([name, row.get("iou_type", "")]).strip()] = row
            resultstools.save(RECORDS, records)
    OUT.write_text(render(records))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    run_script(main)  # a DlforgeError: one line and exit code 2, as in the CLI
