"""COCO mAP: dlforge's `coco_eval` (numpy, vectorised) against pycocotools' COCOeval on the same files.

Data: `--images` synthetic images (default 2,000) from tests/cocotools.py, the files the parity tests use: truths
of 4 categories in images of 48-160 pixels a side (some crowd, some images empty), detections near most truths, up
to `--false-positives` others per image, two images with over 100 detections of one category; boxes (`bbox`) and
masks (`segm`: polygons, uncompressed RLE for crowds, compressed RLE results).

Each side starts from the same ground-truth dict and results list in memory and ends with the twelve summary
figures: pycocotools runs COCO() + loadRes + evaluate + accumulate + summarize (its printing silenced; the copies
it writes into are made before the clock starts), dlforge runs `coco_eval(gt, results, iou_type)`. The figures are
checked equal (1e-4) every round. Paired, interleaved rounds (the order alternating); prints images/s and the median
ratio dlforge/pycocotools with its min and max (above 1: dlforge is faster).

    python bench/coco_map.py [--images 2000] [--rounds 10] [--iou-type bbox segm] [--false-positives 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from copy import deepcopy
from pathlib import Path

import numpy as np

from dlforge.eval.coco_map import coco_eval

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from cocotools import pycocotools_eval, synthetic_coco  # noqa: E402
from paired import paired_rounds, summary  # noqa: E402


def compare(iou_type: str, images: int, rounds: int, false_positives: int) -> dict:
    gt, results = synthetic_coco(images, seed=0, segm=iou_type == "segm", false_positives=false_positives)
    figures: dict[str, np.ndarray] = {}

    def ours(_: int) -> float:
        t0 = time.perf_counter()
        stats = coco_eval(gt, results, iou_type=iou_type).stats
        seconds = time.perf_counter() - t0
        figures["dlforge"] = np.array(list(stats.values()))
        return seconds

    def baseline(_: int) -> float:
        gt_copy, results_copy = deepcopy(gt), deepcopy(results)
        t0 = time.perf_counter()
        stats, _ = pycocotools_eval(gt_copy, results_copy, iou_type, copy=False)
        seconds = time.perf_counter() - t0
        figures["pycocotools"] = np.asarray(stats)
        return seconds

    def checked(side):
        def run(r: int) -> float:
            seconds = side(r)
            if len(figures) == 2 and np.abs(figures["dlforge"] - figures["pycocotools"]).max() > 1e-4:
                raise SystemExit(f"{iou_type}: the figures differ\n dlforge     {figures['dlforge']}\n"
                                 f" pycocotools {figures['pycocotools']}")
            return seconds
        return run

    s = summary(*paired_rounds(checked(ours), checked(baseline), rounds), images)
    return {"iou_type": iou_type, "images": images, "truths": len(gt["annotations"]), "detections": len(results),
            "map": round(float(figures["dlforge"][0]), 4), "equal": True,
            "images_per_s_dlforge": round(s["samples_per_s_dlforge"], 1),
            "images_per_s_pycocotools": round(s["samples_per_s_baseline"], 1),
            **{k: round(s[k], 2) for k in ("ratio_median", "ratio_min", "ratio_max")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--iou-type", nargs="+", default=["bbox", "segm"], choices=["bbox", "segm"])
    ap.add_argument("--false-positives", type=int, default=4, help="at most this many false positives per image")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    try:
        import pycocotools  # noqa: F401
    except ImportError:
        sys.exit("this benchmark needs pycocotools: pip install 'dlforge[dev]'")
    rows = [compare(t, args.images, args.rounds, args.false_positives) for t in args.iou_type]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        print(f"{r['iou_type']:4s}  {r['images']} images, {r['truths']} truths, {r['detections']} detections, "
              f"mAP {r['map']:.4f} (equal)  dlforge {r['images_per_s_dlforge']:.0f} images/s, pycocotools "
              f"{r['images_per_s_pycocotools']:.0f} images/s  ratio {r['ratio_median']:.2f} "
              f"(min {r['ratio_min']:.2f}, max {r['ratio_max']:.2f})")


if __name__ == "__main__":
    main()
