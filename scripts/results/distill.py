"""Write docs/results/distill.md: knowledge distillation (train.distill) against the same student trained alone for the
same steps, the figures of issue 16 (2 CPU cores).

    python scripts/results/distill.py fashion --teacher RUN [--steps 600] [--seeds 0 1 2]   # MLP and LeNet-5 students
    python scripts/results/distill.py gpt --teacher RUN [--steps 300]      # a 2-layer char GPT student
    python scripts/results/distill.py                                      # re-render from the records only

Each student trains twice per seed, alone and with `train.distill={teacher: RUN, alpha, temperature}`, with the same
overrides otherwise (the preset's recipe cut to `--steps`, evaluated three times along the way). Records are saved
after every run, in docs/results/distill.json or `--records FILE` (runs going at once each want their own);
`--merge FILE...` adds the sections of other record files; `--from-json FILE` renders a saved record file instead.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from dlforge.cli.main import run_script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for resultstools: scripts/README.md
import resultstools  # noqa: E402

RECORDS = resultstools.RESULTS / "distill.json"
OUT = resultstools.RESULTS / "distill.md"
STUDENTS = ("fashion-mlp", "fashion-lenet5")
ARMS = ("alone", "distilled")


def arm_overrides(arm: str, steps: int, seed: int, teacher: str, alpha: float, temperature: float) -> list[str]:
    common = [f"train.max_steps={steps}", f"train.seed={seed}", f"train.eval_every={max(1, steps // 3)}",
              f"train.checkpoint_every={max(1, steps // 3)}", "train.tensorboard=false"]
    if arm == "distilled":
        common.append(f"train.distill={{teacher: {teacher}, alpha: {alpha}, temperature: {temperature}}}")
    return common


def measure(records: dict, key: str, presets: list[str], extra: list[str], args: argparse.Namespace,
            path: Path) -> None:
    """Train every (preset, seed, arm) not yet recorded under `key` with these settings; save after each run."""
    settings = {"teacher": args.teacher, "steps": args.steps, "alpha": args.alpha, "temperature": args.temperature,
                "extra": extra}
    section = records.setdefault(key, {})
    if section.get("settings") != settings:
        section.clear()
        section["settings"] = settings
    section["teacher_eval"] = teacher_figures(args.teacher)
    runs = section.setdefault("runs", [])
    done = {(r["preset"], r["seed"], r["arm"]) for r in runs}
    for seed in args.seeds:
        for preset in presets:
            for arm in ARMS:
                if (preset, seed, arm) in done:
                    continue
                overrides = [*arm_overrides(arm, args.steps, seed, args.teacher, args.alpha, args.temperature),
                             *extra, f"runs_dir={args.runs_dir}"]
                record = resultstools.run_preset(preset, overrides)
                runs.append({"preset": preset, "seed": seed, "arm": arm, **record})
                resultstools.save(path, records)
                print(f"{preset} seed {seed} {arm}: test {record['test'].get('accuracy')}, val loss "
                      f"{record['val'].get('loss')}, {record['wall_s']} s", flush=True)


def teacher_figures(teacher: str) -> dict:
    """The teacher run's own final figures: its steps, val and test metrics (its eval.json)."""
    found = resultstools.load(Path(teacher) / "eval.json", {})
    return {"step": found.get("step"), "val": found.get("val", {}), "test": found.get("test", {})}


def summary(runs: list[dict], preset: str, split: str, metric: str) -> dict[str, dict]:
    """Mean, min, max and count of a metric per arm, over the seeds measured in both arms (paired)."""
    mine = [r for r in runs if r["preset"] == preset and metric in r[split]]
    seeds = set.intersection(*({r["seed"] for r in mine if r["arm"] == arm} for arm in ARMS))
    out = {}
    for arm in ARMS:
        values = [r[split][metric] for r in mine if r["arm"] == arm and r["seed"] in seeds]
        if values:
            out[arm] = {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "n": len(values)}
    return out


def _table(section: dict, split: str, metric: str, scale: float, digits: int, better: str, met) -> list[str]:
    """One row per student: each arm's mean (min-max), the difference of the means, whether `met(difference)`."""
    lines = [f"| student | alone: mean (min-max) | distilled: mean (min-max) | difference ({better} is better) "
             "| target met | seeds |", "|---|---|---|---|---|---|"]
    presets = sorted({r["preset"] for r in section["runs"]}, key=lambda p: (STUDENTS + (p,)).index(p))
    for preset in presets:
        s = summary(section["runs"], preset, split, metric)
        cells = [f"{v['mean'] * scale:.{digits}f} ({v['min'] * scale:.{digits}f}-{v['max'] * scale:.{digits}f})"
                 if v else "-" for v in (s.get("alone"), s.get("distilled"))]
        diff = (s["distilled"]["mean"] - s["alone"]["mean"]) * scale if len(s) == 2 else None
        seeds = min(v["n"] for v in s.values()) if s else 0
        verdict = "-" if diff is None else ("yes" if met(diff) else "no")
        lines.append(f"| {preset} | {cells[0]} | {cells[1]} | {f'{diff:+.{digits}f}' if diff is not None else '-'} "
                     f"| {verdict} | {seeds} |")
    return lines


def _settings(section: dict) -> str:
    s = section["settings"]
    extra = " ".join(s["extra"]) if s["extra"] else "none"
    return (f"Teacher `{s['teacher']}`; {s['steps']} steps per run, alpha {s['alpha']}, temperature "
            f"{s['temperature']}; other overrides: {extra}.")


def render(records: dict) -> str:
    lines = ["# Results: knowledge distillation", "",
             "Written by `scripts/results/distill.py`; do not edit by hand.", "",
             f"Machine: {records.get('machine', resultstools.machine())}.", "",
             "Each student is trained twice per seed with the same overrides: alone, and with",
             "`train.distill={teacher: RUN, alpha: A, temperature: T}` (loss = A x the student's own loss + (1 - A) x",
             "T^2 x KL(teacher/T || student/T), `dlforge.deploy.distill`). The preset's recipe is cut to a fixed",
             "number of steps (its schedule over those steps), evaluated on val three times; the final figures are",
             "of the best of those checkpoints by the preset's monitor, as in any run.", ""]
    for key, section in sorted(records.items(), key=lambda item: (item[0] != "fashion", item[0])):
        if key.startswith("fashion") and section.get("runs"):
            title = "" if key == "fashion" else f" (another setting tried: {key})"
            lines += [f"## Fashion-MNIST: ResNet-20 teacher, MLP and LeNet-5 students{title}", "",
                      _settings(section), "",
                      "Test accuracy, in points (target: distilled >= alone + 0.5 in the mean, per student):", "",
                      *_table(section, "test", "accuracy", 100, 2, "higher", lambda d: d >= 0.5), ""]
            accuracy = section.get("teacher_eval", {}).get("test", {}).get("accuracy")
            if accuracy is not None:
                lines += [f"The teacher's own test accuracy: {accuracy * 100:.2f}.", ""]
    for key, section in sorted(records.items()):
        if key.startswith("gpt") and section.get("runs"):
            lines += [f"## Char GPT: a 2-layer student of the 4-layer `gpt-shakespeare-char` ({key})", "",
                      _settings(section), "",
                      "Validation loss, nats per character (target: distilled lower than alone):", "",
                      *_table(section, "val", "loss", 1, 4, "lower", lambda d: d < 0), ""]
            loss = section.get("teacher_eval", {}).get("val", {}).get("loss")
            if loss is not None:
                step = section["teacher_eval"].get("step")
                lines += [f"The teacher's own validation loss: {loss:.4f} (trained {step} steps).", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", nargs="?", choices=["fashion", "gpt"])
    ap.add_argument("--teacher", help="the teacher run (folder)")
    ap.add_argument("--steps", type=int, default=600, help="optimizer steps per run, both arms")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--students", nargs="+", default=list(STUDENTS), help="fashion: the student presets")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="fashion: overrides for both arms")
    ap.add_argument("--key", help="the record's name (default: the action; another key keeps another setting)")
    ap.add_argument("--runs-dir", default="runs", help="where the runs go")
    ap.add_argument("--records", type=Path, default=RECORDS, help="the record file to add to (default: "
                    "docs/results/distill.json)")
    ap.add_argument("--merge", type=Path, nargs="+", default=[], help="add the sections of these record files")
    ap.add_argument("--from-json", help="render these saved records instead of docs/results/distill.json")
    args = ap.parse_args()
    records = resultstools.load(Path(args.from_json) if args.from_json else args.records, {})
    for other in args.merge:
        records.update({k: v for k, v in resultstools.load(other, {}).items() if k != "machine"})
    for section in records.values():  # the teacher's figures, where its run is at hand
        if isinstance(section, dict) and "settings" in section and Path(section["settings"]["teacher"]).is_dir():
            section["teacher_eval"] = teacher_figures(section["settings"]["teacher"])
    if args.action and not args.teacher:
        raise SystemExit(f"{args.action}: give --teacher RUN")
    if args.action == "fashion":
        measure(records, args.key or "fashion", args.students, args.set, args, args.records)
    elif args.action == "gpt":
        key = args.key or "gpt"
        measure(records, key, ["gpt-shakespeare-char"], ["model.n_layers=2", "train.warmup_steps=30"], args,
                args.records)
    if args.action:
        resultstools.save(args.records, records)
    if args.records == RECORDS or not args.action:
        resultstools.finish(RECORDS, OUT, records, render)


if __name__ == "__main__":
    run_script(main)  # a DlforgeError: one line and exit code 2, as in the CLI
