"""Domain adaptation, measured: a GPT pretrained on Shakespeare, the same GPT after continued pretraining on the Bible,
and a GPT trained on the Bible from scratch with the same budget; validation perplexity of each on both corpora.

    python scripts/studies/domain_adaptation.py         # trains the three presets (about 20-25 minutes on 2 CPU
                                                        # cores), writes docs/results/domain_adaptation.md + .json
    python scripts/studies/domain_adaptation.py --base latest:gpt-shakespeare-bpe  # reuse a base, train the others
    python scripts/studies/domain_adaptation.py --base RUN --adapted RUN --scratch RUN  # only measure
    python scripts/studies/domain_adaptation.py --quick  # a smoke check: a few steps each, written to /tmp

The presets: gpt-shakespeare-bpe (the base), gpt-bible-adapt (train.init_from the base, a quarter of its learning
rate) and gpt-bible-scratch (random weights, the base's recipe); the two Bible runs take the base's tokenizer and the
same number of steps. Both corpora are measured on their validation split (the Bible's Joshua, Ezra, Lamentations and
Mark; the plays As You Like It, Henry VI part 3, Pericles, Titus Andronicus), over the same side-by-side windows of
128 tokens for every model (`dlforge lm perplexity`). Acceptance (the issue's): continued pretraining closes at least
half of the gap between the base and the scratch model on the Bible,

    ppl_base(Bible) - ppl_adapted(Bible) >= 0.5 * (ppl_base(Bible) - ppl_scratch(Bible)).

What was forgotten is the change of Shakespeare perplexity from the base to the adapted model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dlforge.cli.main import run_script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for resultstools: scripts/README.md
import resultstools  # noqa: E402

ROOT = resultstools.ROOT
CORPORA = ("bible_web", "shakespeare")
QUICK = ["train.max_steps=12", "train.warmup_steps=2", "train.eval_every=6", "train.checkpoint_every=6",
         "train.log_every=3", "data.limit=256"]


def measure(runs: dict[str, str], split: str = "val") -> dict[str, dict[str, dict]]:
    """{model: {corpus: perplexity report}} for the three models on both corpora."""
    from dlforge.llm.perplexity import perplexity_report

    report = perplexity_report(list(runs.values()), list(CORPORA), split=split)
    by_run = {str(path): name for name, path in runs.items()}
    out: dict[str, dict[str, dict]] = {name: {} for name in runs}
    for r in report["results"]:
        out[by_run[r["run"]]][r["corpus"]] = {k: r[k] for k in ("perplexity", "bits_per_char", "loss", "tokens",
                                                                "windows")}
    return out


def verdict(ppl: dict[str, dict[str, dict]]) -> dict[str, float | bool]:
    bible = {m: ppl[m]["bible_web"]["perplexity"] for m in ppl}
    plays = {m: ppl[m]["shakespeare"]["perplexity"] for m in ppl}
    gained, gap = bible["base"] - bible["adapted"], bible["base"] - bible["scratch"]
    return {"bible_gained": gained, "bible_gap_base_to_scratch": gap, "share_of_gap_closed": gained / gap,
            "shakespeare_forgotten": plays["adapted"] - plays["base"], "accepted": gained >= 0.5 * gap}


def markdown(result: dict) -> str:
    ppl, v, walls = result["perplexity"], result["verdict"], result["wall_s"]
    lines = [
        "# Domain adaptation: Shakespeare -> Bible", "",
        "Written by `scripts/studies/domain_adaptation.py`; do not edit by hand. Validation perplexity per token (the "
        "same byte-level BPE tokenizer of 2048 tokens, trained on the plays, for every model; the same windows of "
        f"{result['context']} tokens) and bits per character.", "",
        f"Machine: {result['machine']}.", "",
        "| model | run | Bible ppl | Bible bits/char | Shakespeare ppl | Shakespeare bits/char | wall-clock |",
        "|---|---|---|---|---|---|---|",
    ]
    names = {"base": "gpt-shakespeare-bpe", "adapted": "gpt-bible-adapt", "scratch": "gpt-bible-scratch"}
    for m in ("base", "adapted", "scratch"):
        b, s = ppl[m]["bible_web"], ppl[m]["shakespeare"]
        wall = f"{walls[m] / 60:.1f} min" if walls.get(m) else "(given)"
        lines.append(f"| {names[m]} | `{Path(result['runs'][m]).name}` | {b['perplexity']:.2f} | "
                     f"{b['bits_per_char']:.3f} | {s['perplexity']:.2f} | {s['bits_per_char']:.3f} | {wall} |")
    ok = "met" if v["accepted"] else "NOT met"
    lines += [
        "", f"- Gained on the Bible by continued pretraining: {v['bible_gained']:.2f} perplexity, "
        f"{100 * v['share_of_gap_closed']:.0f}% of the gap from the base to the scratch model "
        f"({v['bible_gap_base_to_scratch']:.2f}).",
        f"- Forgotten on Shakespeare: {v['shakespeare_forgotten']:+.2f} perplexity (adapted minus base).",
        f"- Acceptance, ppl_base - ppl_adapted >= 0.5 (ppl_base - ppl_scratch) on the Bible: **{ok}**.", "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="a gpt-shakespeare-bpe run to start from (default: train one)")
    parser.add_argument("--adapted", help="a gpt-bible-adapt run (default: train one from the base)")
    parser.add_argument("--scratch", help="a gpt-bible-scratch run (default: train one)")
    resultstools.study_arguments(parser, "domain_adaptation")
    args = parser.parse_args()

    extra = QUICK if args.quick else []
    out = resultstools.out_folder(args, "domain-")
    walls: dict[str, float | None] = {}
    base, walls["base"] = resultstools.train_in_process("gpt-shakespeare-bpe", extra, args.runs_dir, args.base)
    source = [f"train.init_from={base}", f"data.tokenizer={base}"]  # this base, whatever `latest` becomes
    runs = {"base": base}
    for name, preset, given, overrides in (("adapted", "gpt-bible-adapt", args.adapted, source),
                                           ("scratch", "gpt-bible-scratch", args.scratch, source[1:])):
        runs[name], walls[name] = resultstools.train_in_process(preset, [*overrides, *extra], args.runs_dir, given)
    ppl = measure({k: str(v) for k, v in runs.items()})
    context = json.loads((Path(base) / "model" / "preprocessing.json").read_text()).get("context")
    result = {"runs": {k: str(v) for k, v in runs.items()}, "perplexity": ppl, "verdict": verdict(ppl),
              "wall_s": walls, "context": context, "quick": args.quick}
    resultstools.write_study(out, "domain_adaptation", result, markdown)


if __name__ == "__main__":
    run_script(main)  # a DlforgeError: one line and exit code 2, as in the CLI
