"""Drift detection on Fashion-MNIST embeddings: the MMD permutation test's false-positive rate and power.

    python scripts/studies/drift_power.py                  # trains a short fashion-simplecnn run (a few minutes on
                                                           # 2 CPU cores), writes docs/results/drift.md + drift.json
    python scripts/studies/drift_power.py --run RUN        # a trained Fashion-MNIST classifier run instead
    python scripts/studies/drift_power.py --quick          # a smoke check: tiny run, few resamples, written to /tmp

Embeddings are the classifier's pooled penultimate features (`dlforge.eval.generative.ClassifierExtractor`, as
`dlforge monitor` takes them for an image run). The reference is 1000 images of the run's validation split: drawn
from the training images but never trained on, so that the model's fit to its training images is not mistaken for
drift (a row with a reference from the training split itself shows what that would do). Each scenario draws 500 test
images 100 times and runs `dlforge.eval.drift.mmd_test` (Gaussian kernel, median-heuristic bandwidth, 200
permutations) at alpha 0.05:

- no drift: test images as they are: the share flagged is the false-positive rate (acceptance: <= 0.07);
- class prior: class 0 (T-shirt/top) drawn as half of each sample instead of a tenth, the others in proportion;
- noise: Gaussian noise of sigma 0.2 added to the [0, 1] pixels (clipped to [0, 1]);
- rotation: every image turned 15 degrees about its centre (OpenCV, bilinear, black corners).
Acceptance: power (the share flagged) >= 0.9 for each shift.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from dlforge.cli.main import run_script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for resultstools: scripts/README.md
import resultstools  # noqa: E402

TRAIN = ["train.max_steps=400", "train.max_epochs=null", "train.eval_every=400", "train.checkpoint_every=null",
         "train.tensorboard=false"]
QUICK = ["train.max_steps=20", "train.max_epochs=null", "train.eval_every=20", "train.checkpoint_every=null",
         "train.tensorboard=false", "train.limit_eval_batches=2"]
SCENARIOS = ("no drift", "no drift, reference from train", "no drift, a fresh reference each time", "class prior",
             "noise", "rotation")


def rotate(images: np.ndarray, degrees: float) -> np.ndarray:
    """(N, H, W) floats in [0, 1], each turned `degrees` counter-clockwise about its centre (black corners)."""
    import cv2

    h, w = images.shape[1:]
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0)
    return np.stack([cv2.warpAffine(im, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=0.0) for im in images])


def embed(extractor, images: np.ndarray, batch: int = 500) -> np.ndarray:
    """Penultimate features (N, D) of (N, H, W) images in [0, 1]."""
    import torch

    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i:i + batch].astype(np.float32))[:, None]
        with torch.no_grad():
            out.append(extractor(x).numpy())
    return np.concatenate(out)


def fresh_references(references: np.ndarray, n_reference: int, pool: np.ndarray, size: int, resamples: int,
                     seed: int, n_permutations: int) -> dict:
    """As `rejection_rate`, but each resample is tested against its own reference sample: the test's calibration
    over pairs of samples, not conditional on one reference."""
    from dlforge.eval.drift import mmd_test

    rng = np.random.default_rng(seed)
    p_values = []
    for i in range(resamples):
        ref = references[rng.choice(len(references), n_reference, replace=False)]
        cur = pool[rng.choice(len(pool), size, replace=False)]
        p_values.append(mmd_test(ref, cur, n_permutations, seed=seed * 100_003 + i)["p_value"])
    return {"rate": float(np.mean(np.array(p_values) < 0.05)), "p_values": p_values}


def measure(run: Path, resamples: int, size: int, n_reference: int, n_permutations: int, seed: int) -> dict:
    import torch

    from dlforge.config import load_config
    from dlforge.data.dataset import build_data
    from dlforge.data.idx import read_idx
    from dlforge.data.images import FASHION_DIR, FASHION_FILES, denormalize
    from dlforge.eval.drift import rejection_rate
    from dlforge.eval.generative import ClassifierExtractor

    extractor = ClassifierExtractor.load(run)
    data = build_data(load_config(run / "config.yaml"))
    pre = extractor.model.meta["extra"]["preprocessing.json"]
    rng = np.random.default_rng(seed)

    def sample_of(split, n: int) -> np.ndarray:
        rows = rng.choice(len(split), size=min(n, len(split)), replace=False)
        x = torch.stack([split[int(i)]["x"] for i in rows])
        return denormalize(pre, x).numpy()[..., 0] / 255.0  # the split's own pixels, in [0, 1]

    images, labels = FASHION_FILES["test"]
    test = read_idx(FASHION_DIR / images).astype(np.float32) / 255.0  # (10000, 28, 28)
    test_labels = read_idx(FASHION_DIR / labels)
    noisy = np.clip(test + np.random.default_rng(seed + 1).normal(0, 0.2, test.shape), 0, 1)
    t0 = time.perf_counter()
    val = embed(extractor, sample_of(data.val, len(data.val)))  # in a random order
    reference = {"val": val[:n_reference], "train": embed(extractor, sample_of(data.train, n_reference))}
    pools = {"no drift": embed(extractor, test), "noise": embed(extractor, noisy),
             "rotation": embed(extractor, rotate(test, 15.0))}
    embed_s = time.perf_counter() - t0
    prior = np.where(test_labels == 0, 0.5 / np.sum(test_labels == 0), 0.5 / np.sum(test_labels != 0))
    rows = {}
    t0 = time.perf_counter()
    for i, name in enumerate(SCENARIOS):
        ref = reference["train" if "train" in name else "val"]
        pool = pools.get(name.split(",")[0], pools["no drift"])
        if "fresh" in name:
            result = fresh_references(val, n_reference, pool, size, resamples, seed + i, n_permutations)
        else:
            result = rejection_rate(ref, pool, size, resamples, seed=seed + i, n_permutations=n_permutations,
                                    weights=prior if name == "class prior" else None)
        rows[name] = {"rate": result["rate"], "median_p": float(np.median(result["p_values"]))}
        print(f"{name}: {result['rate']:.2f} flagged", flush=True)
    ok = rows["no drift"]["rate"] <= 0.07 and all(rows[k]["rate"] >= 0.9 for k in ("class prior", "noise", "rotation"))
    import json

    accuracy = json.loads((run / "eval.json").read_text()).get("test", {}).get("accuracy")
    return {"run": str(run), "test_accuracy": accuracy, "features": int(reference["val"].shape[1]), "rows": rows,
            "accepted": ok,
            "resamples": resamples, "size": size, "n_reference": len(reference["val"]),
            "n_permutations": n_permutations, "alpha": 0.05, "embed_s": round(embed_s, 1),
            "test_s": round(time.perf_counter() - t0, 1)}


def markdown(result: dict) -> str:
    rows = result["rows"]
    walls = result["wall_s"]
    trained = f"{walls['train']:.0f} s to train, " if walls.get("train") else ""
    lines = [
        "# Drift detection on Fashion-MNIST embeddings", "",
        "Written by `scripts/studies/drift_power.py`; do not edit by hand. The MMD permutation test of `dlforge "
        "monitor` (`dlforge.eval.drift.mmd_test`: unbiased MMD^2, Gaussian kernel with the median-heuristic "
        f"bandwidth, {result['n_permutations']} permutations) on the {result['features']} pooled penultimate "
        f"features of the classifier run `{Path(result['run']).name}` (test accuracy "
        f"{result['test_accuracy'] or float('nan'):.3f}). Reference: {result['n_reference']} images of "
        f"the run's validation split (never trained on). Each row: {result['resamples']} samples of "
        f"{result['size']} test images; the share called drifted at alpha {result['alpha']}.", "",
        f"Command: `{result['command']}`. Wall time {walls['total']:.0f} s ({trained}{result['embed_s']:.0f} s to "
        f"embed, {result['test_s']:.0f} s of tests). Machine: {result['machine']}.", "",
        "| scenario | shift | share flagged | median p | acceptance |", "|---|---|---|---|---|",
    ]
    shifts = {"no drift": "none (false-positive rate)",
              "no drift, reference from train": "none, but the reference drawn from the training split",
              "no drift, a fresh reference each time": "none; each resample against its own 1000 of the 5000 "
                                                       "validation images",
              "class prior": "class 0 (T-shirt/top) is half of each sample (a tenth in the test split)",
              "noise": "Gaussian noise, sigma 0.2 on [0, 1] pixels, clipped", "rotation": "rotated 15 degrees"}
    wanted = {"no drift": ("<= 0.07", lambda r: r <= 0.07), "class prior": (">= 0.9", lambda r: r >= 0.9),
              "noise": (">= 0.9", lambda r: r >= 0.9), "rotation": (">= 0.9", lambda r: r >= 0.9)}
    for name, row in rows.items():
        bar, check = wanted.get(name, ("(shown only)", None))
        verdict = bar if check is None else f"{bar}: {'met' if check(row['rate']) else 'NOT met'}"
        lines.append(f"| {name} | {shifts[name]} | {row['rate']:.2f} | {row['median_p']:.3g} | {verdict} |")
    lines += ["", f"Acceptance (false-positive rate <= 0.07, power >= 0.9 for each shift): "
              f"**{'met' if result['accepted'] else 'NOT met'}**.", "",
              "The permutation test is exact for a fresh pair of samples (its p-value uniform without drift), which "
              "the row with a fresh reference each time measures; in the other rows one reference sample serves every "
              "resample, as in monitoring, so their false-positive rate is that of this reference and may fall below "
              "alpha. The smallest p-value 200 permutations give is 1/201 = 0.005: a median p at that floor means "
              "almost no permutation came near the observed MMD.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="a trained Fashion-MNIST classifier run (default: train fashion-simplecnn)")
    parser.add_argument("--resamples", type=int, default=100)
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    resultstools.study_arguments(parser, "drift")
    args = parser.parse_args()
    out = resultstools.out_folder(args, "drift-")
    start = time.perf_counter()
    run, train_s = resultstools.train_in_process("fashion-simplecnn", QUICK if args.quick else TRAIN, args.runs_dir,
                                                 args.run)
    resamples = 5 if args.quick else args.resamples
    result = measure(Path(run), resamples, args.size, 1000, 200, args.seed)
    result["command"] = "python " + " ".join(["scripts/studies/drift_power.py", *sys.argv[1:]])
    result["wall_s"] = {"total": time.perf_counter() - start, "train": train_s}
    result["quick"] = args.quick
    resultstools.write_study(out, "drift", result, markdown)


if __name__ == "__main__":
    run_script(main)  # a DlforgeError: one line and exit code 2, as in the CLI
