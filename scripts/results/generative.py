"""Write docs/results/generative.md: the generative-model acceptance figures of issue 15 (Fashion-MNIST, 2 CPU cores).

    python scripts/results/generative.py train fashion-ae fashion-vae ...     # train these presets, record them
    python scripts/results/generative.py record fashion-dcgan=out.json        # a run trained before: its train --json
    python scripts/results/generative.py score [PRESET...] [--compare 1000]   # sample, time and score the runs
    python scripts/results/generative.py bench                                # the bench/generative_step.py rows
    python scripts/results/generative.py                                      # re-render from the records only

`train` runs `dlforge train PRESET --json` in a subprocess and keeps its test figures and times (the whole command,
and the training loop alone: `fit_s`). `score` loads each recorded run that samples, draws 1,000 images (seed 0;
classes in turn for a class-conditional model), times the sampling and scores them against the first 1,000 test
images on one extractor (`--extractor`, a dlforge classifier run; default the latest fashion-extractor run), beside
the reference rows (real training images: the floor; Gaussian noise: the ceiling). For the diffusion run it does so
with the preset's DDIM-50 sampler; `--compare N` samples it with DDIM-50 and with 1,000 DDPM ancestral steps, N
images each (N = 1000: over an hour on 2 cores).
For the autoencoder it computes the PCA baselines (16 and 32 components fitted on the training split). Records live
in docs/results/generative.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from dlforge.cli.main import run_script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for resultstools: scripts/README.md
import resultstools  # noqa: E402

RECORDS = resultstools.RESULTS / "generative.json"
OUT = resultstools.RESULTS / "generative.md"
PRESETS = {"fashion-ae": 10, "fashion-vae": 15, "fashion-dcgan": 30, "fashion-ddpm": 30}  # preset -> limit (min)
N = 1000  # samples scored, against as many test images
BENCHES = {"diffusion U-Net step": ["--bench", "diffusion"], "DCGAN step": ["--bench", "gan"],
           "DDIM-50 sampling": ["--bench", "ddim"]}


def load() -> dict:
    return resultstools.load(RECORDS, {"presets": {}, "scores": {}, "bench": {}})


# --- measuring ---------------------------------------------------------------------------------------------------


def train(records: dict, presets: list[str]) -> None:
    for preset in presets:
        if preset not in PRESETS:
            raise SystemExit(f"{preset}: not in this table; expected one of {', '.join(PRESETS)}")
        record = resultstools.run_preset(preset)
        records["presets"][preset] = record
        resultstools.save(RECORDS, records)
        print(json.dumps({preset: record["test"]}), flush=True)


def record(records: dict, pairs: list[str], cwd: str) -> None:
    """PRESET=FILE: the saved output of `dlforge train PRESET --json`, which ran in `cwd` (its run_dir is relative)."""
    for pair in pairs:
        preset, _, file = pair.partition("=")
        out = json.loads(Path(file).read_text())
        out["run_dir"] = str(Path(cwd, out["run_dir"]).resolve())
        rec = resultstools.record_run(out)
        rec["fit_s"] = out.get("fit_s")
        records["presets"][preset] = rec
        resultstools.save(RECORDS, records)
        print(json.dumps({preset: rec["test"]}), flush=True)


def score(records: dict, extractor_spec: str, only: list[str], compare: int, guidance: float | None) -> None:
    """Sample, time and score every recorded run that samples (or those in `only`); `compare` > 0: the diffusion
    run with DDIM-50 and DDPM-1000 on that many samples each, against as many test images."""
    import torch

    from dlforge.api import build_data, load
    from dlforge.config import load_config
    from dlforge.eval.generative import generation_scores, load_extractor
    from dlforge.tasks.generation import _images, real_shape

    extractor = load_extractor(extractor_spec)
    for preset, rec in records["presets"].items():
        if only and preset not in only:
            continue
        run = Path(rec["run_dir"])
        data = build_data(load_config(run / "config.yaml"))
        if preset == "fashion-ae":
            records["scores"][preset] = pca_baselines(data)
            continue
        model = load(run)
        if not hasattr(model, "sample"):
            continue
        if "reference" not in records or records["reference"].get("extractor") != extractor.report_name:
            real = extractor.extract(_images(data.test, N))
            noise = (0.5 + 0.5 * torch.randn(real_shape(data.test, N), generator=torch.Generator().manual_seed(0)))
            records["reference"] = {
                "extractor": extractor.report_name, "extractor_spec": extractor_spec,
                "real train (floor)": generation_scores(real, extractor.extract(_images(data.train, N))),
                "Gaussian noise (ceiling)": generation_scores(real, extractor.extract(noise.clamp(0, 1)))}
        runs = [("default" if not hasattr(model, "schedule") else "DDIM-50", N, {})]
        if hasattr(model, "schedule"):
            runs = [("DDIM-50", N, {"steps": 50, "sampler": "ddim"})]
            if compare:
                runs = [(f"{tag} (n={compare})", compare, {"steps": steps, "sampler": sampler})
                        for tag, steps, sampler in (("DDIM-50", 50, "ddim"), ("DDPM-1000", 1000, "ddpm"))]
        if guidance is not None and getattr(model.config, "conditional", False) and hasattr(model, "schedule"):
            runs = [(f"{tag}, guidance {guidance:g}", n, {**kwargs, "guidance": guidance}) for tag, n, kwargs in runs]
        rows = records["scores"].setdefault(preset, {})
        for tag, n, kwargs in runs:
            real = extractor.extract(_images(data.test, n))
            labels = None
            if getattr(model.config, "conditional", False):  # classes in turn
                labels = kwargs["labels"] = torch.arange(n) % int(data.info["num_classes"])
            start = time.perf_counter()
            with torch.no_grad():
                images = model.sample(n, generator=torch.Generator().manual_seed(0), **kwargs).cpu()
            seconds = time.perf_counter() - start
            fake = extractor.extract(images)
            row = generation_scores(real, fake, kid_subset_size=min(1000, n))
            if labels is not None:
                row["class_match"] = float((fake.logits.argmax(dim=1) == labels).double().mean())
            rows[tag] = {**row, "sample_s": round(seconds, 1), "threads": torch.get_num_threads()}
            print(json.dumps({preset: {tag: rows[tag]}}), flush=True)
            resultstools.save(RECORDS, records)


def pca_baselines(data) -> dict:
    """Test MSE per pixel of PCA with 16 and 32 components fitted on the training split (float64)."""
    import torch

    train = _flat(data.train).double()
    test = _flat(data.test).double()
    mean = train.mean(dim=0)
    _, _, v = torch.linalg.svd(train - mean, full_matrices=False)  # rows of v: principal directions
    out = {}
    for k in (16, 32):
        p = v[:k].T
        recon = (test - mean) @ p @ p.T + mean
        out[f"pca{k}_mse"] = float((recon - test).square().mean())
    return out


def _flat(ds):
    from dlforge.tasks.generation import _images

    return _images(ds, len(ds)).flatten(1)


def bench(records: dict) -> None:
    for name, bench_args in BENCHES.items():
        records["bench"][name] = resultstools.run_bench("generative_step", bench_args)
        resultstools.save(RECORDS, records)


# --- the page ----------------------------------------------------------------------------------------------------


def _f(value: object, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "—"


def _minutes(rec: dict, limit: int) -> str:
    fit = f", training {rec['fit_s'] / 60:.1f} min" if rec.get("fit_s") else ""
    return f"{rec['wall_s'] / 60:.1f} min whole command{fit} (limit {limit} min)"


def render(records: dict) -> str:
    presets, scores, ref = records["presets"], records["scores"], records.get("reference", {})
    lines = ["# Results: generative models", "",
             "Written by `scripts/results/generative.py` (`make results-generative`); do not edit by hand. Each run is",
             "one `dlforge train PRESET --json` on this machine; the sample scores are re-measured by the script on",
             f"{N:,} samples (seed 0) against the first {N:,} Fashion-MNIST test images on one extractor.", "",
             f"Machine: {records.get('machine', resultstools.machine())}.", ""]
    if ref:
        lines += [f"Extractor: `{ref['extractor']}` (`--extractor {ref.get('extractor_spec')}`). Reference rows on the",
                  "same images: real training images (the floor) and Gaussian noise (the ceiling).", "",
                  "| reference | FID | KID | IS | confident > 0.9 |", "|---|---|---|---|---|"]
        for name in ("real train (floor)", "Gaussian noise (ceiling)"):
            r = ref.get(name, {})
            lines.append(f"| {name} | {_f(r.get('fid'), 2)} | {_f(r.get('kid'))} | {_f(r.get('is'), 2)} | "
                         f"{_f(r.get('confident'), 3)} |")
        lines.append("")
    ae, vae = presets.get("fashion-ae"), presets.get("fashion-vae")
    lines += ["## Autoencoder and VAE", ""]
    if ae:
        pca = scores.get("fashion-ae", {})
        lines += [f"- `fashion-ae` (code 16): test MSE {_f(ae['test'].get('mse'))} per pixel; PCA-16 "
                  f"{_f(pca.get('pca16_mse'))}, PCA-32 {_f(pca.get('pca32_mse'))} (fitted on the training split). "
                  f"Target: below PCA-16, goal below PCA-32. {_minutes(ae, PRESETS['fashion-ae'])}."]
    if vae:
        t = vae["test"]
        gain = 1 - t["nll_iwae"] / t["nll_pixels"] if t.get("nll_pixels") else None
        lines += [f"- `fashion-vae` (784-400-20, statically binarized): test ELBO {_f(t.get('elbo'), 1)} nats (recon "
                  f"{_f(t.get('recon'), 1)}, KL {_f(t.get('kl'), 1)}); IWAE-5000 NLL {_f(t.get('nll_iwae'), 1)} nats "
                  f"on the first 1,000 test images against {_f(t.get('nll_pixels'), 1)} for independent Bernoulli "
                  f"pixels: {_f(gain and 100 * gain, 1)}% lower (target >= 30%). "
                  f"{_minutes(vae, PRESETS['fashion-vae'])}."]
    lines += ["", "## Samples", "",
              "| run | sampler | samples | FID | KID | IS (target) | confident > 0.9 | smallest class | class match | "
              "sampling time |", "|---|---|---|---|---|---|---|---|---|---|"]
    targets = {"fashion-dcgan": ">= 7.0", "fashion-ddpm": ">= 6.5"}
    for preset in ("fashion-vae", "fashion-dcgan", "fashion-ddpm"):
        for tag, r in scores.get(preset, {}).items():
            lines.append(f"| {preset} | {tag} | {r.get('n')} | {_f(r.get('fid'), 2)} | {_f(r.get('kid'))} | "
                         f"{_f(r.get('is'), 2)}{f' ({targets[preset]})' if preset in targets else ''} | "
                         f"{_f(r.get('confident'), 3)} | "
                         f"{_f(r.get('min_class_share'), 3)} | {_f(r.get('class_match'), 3)} | "
                         f"{_f(r.get('sample_s'), 1)} s |")
    lines += ["", "Targets: DCGAN FID below the VAE's, every class >= 5% of its samples; diffusion >= 80% of samples",
              "confident, DDIM-50 FID within 25% of DDPM-1000's, class match >= 90%, DDIM-50 sampling <= 3 min.", ""]
    for preset in ("fashion-dcgan", "fashion-ddpm"):
        if preset in presets:
            rec = presets[preset]
            lines.append(f"- `{preset}`: {rec['steps']} steps, {_minutes(rec, PRESETS[preset])}.")
    if records["bench"]:
        lines += ["", "## Benchmarks", "",
                  "`python bench/generative_step.py --bench NAME --json`, dlforge and its baseline interleaved in one",
                  "process; the ratio is dlforge's speed over the baseline's (median, min, max over the rounds).", "",
                  "| benchmark | ratio median | min | max |", "|---|---|---|---|"]
        for name, b in records["bench"].items():
            lines.append(f"| {name} | {_f(b.get('ratio_median'), 3)} | {_f(b.get('ratio_min'), 3)} | "
                         f"{_f(b.get('ratio_max'), 3)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", nargs="?", choices=["train", "record", "score", "bench"])
    ap.add_argument("items", nargs="*", help="train: presets ('all'); record: PRESET=FILE pairs; score: presets")
    ap.add_argument("--cwd", default=".", help="record: where the recorded commands ran (their run_dir is relative)")
    ap.add_argument("--extractor", default="latest:fashion-extractor", help="score: the classifier run to score on")
    ap.add_argument("--guidance", type=float, help="score: another guidance scale for the conditional diffusion run")
    ap.add_argument("--compare", type=int, default=0, help="score: DDIM-50 against DDPM-1000 on this many samples")
    args = ap.parse_args()
    records = load()
    if args.action == "train":
        train(records, list(PRESETS) if args.items == ["all"] else args.items)
    elif args.action == "record":
        record(records, args.items, args.cwd)
    elif args.action == "score":
        score(records, args.extractor, args.items, args.compare, args.guidance)
    elif args.action == "bench":
        bench(records)
    resultstools.finish(RECORDS, OUT, records, render)


if __name__ == "__main__":
    run_script(main)  # a DlforgeError: one line and exit code 2, as in the CLI
