"""Write docs/results/lm.md: the language-model acceptance figures (GPT, BERT, translation), each measured by a real
`dlforge train` on this machine, with the genre baseline, the benchmarks, and the headlines of the domain-adaptation
and instruction-tuning pages.

    python scripts/results/lm.py gpt-shakespeare-bpe bible-en-es ...   # train these presets, record, re-render
    python scripts/results/lm.py --import bible-en-es=train.json       # record a `dlforge train --json` output
    python scripts/results/lm.py --genre --bench                       # genre baseline; bench/*.py --json
    python scripts/results/lm.py                                       # re-render from the records only

Records live in docs/results/lm.json, so a figure is re-measured only when asked. `make results-lm` measures
everything, the domain-adaptation and instruction-tuning scripts included (about two hours on 2 CPU cores).
Training time is from the run folder's creation to its last checkpoint (the training loop); wall-clock is the whole
command (data, tokenizer, training, final evaluation of every split, beam search included).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from dlforge.cli.main import run_script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for resultstools: scripts/README.md
import resultstools  # noqa: E402

ROOT = resultstools.ROOT
RECORDS = resultstools.RESULTS / "lm.json"
OUT = resultstools.RESULTS / "lm.md"

# preset -> [(split, metric, acceptance target)]; the first row is the headline
TARGETS = {
    "gpt-shakespeare-char": [("val", "loss", "<= 1.60 nats/char within 15 min"), ("test", "loss", ""),
                             ("val", "bits_per_char", "")],
    "gpt-shakespeare-bpe": [("val", "perplexity", "reported (per BPE token)"), ("val", "bits_per_char",
                                                                                 "comparable with the char model"),
                            ("test", "perplexity", "")],
    "bert-shakespeare-mlm": [("test", "accuracy", "masked-token accuracy, reported"), ("test", "perplexity", "")],
    "genre-minilm": [("test", "f1", "macro-F1 > TF-IDF + logistic regression"), ("test", "accuracy", "")],
    "genre-bert-small": [("test", "f1", "macro-F1, against the same baseline"), ("test", "accuracy", "")],
    "bible-en-es": [("test", "bleu", ">= 10 within 30 min (goal 20), beam search"),
                    ("test", "bleu_greedy", "beam >= greedy"), ("test", "chrf", ""), ("test", "chrf_greedy", ""),
                    ("val", "bleu", "")],
}
BENCHES = {"gpt_train": [], "generate": [], "bert_step": []}
SAMPLE_PROMPT = "ROMEO:"


def train_seconds(run_dir: Path) -> float | None:
    """From the run folder's config.yaml (written as training starts) to its newest checkpoint file."""
    ckpts = [p for p in (run_dir / "checkpoints").rglob("*") if p.is_file()]
    config = run_dir / "config.yaml"
    if not ckpts or not config.is_file():
        return None
    return round(max(p.stat().st_mtime for p in ckpts) - config.stat().st_mtime, 1)


def sample(run_dir: str) -> str:
    """A seeded sample of 120 tokens from a GPT run, prompted with SAMPLE_PROMPT."""
    proc = subprocess.run([sys.executable, "-m", "dlforge", "generate", run_dir, "--prompt", SAMPLE_PROMPT,
                           "--max-new-tokens", "120", "--temperature", "0.8", "--top-k", "50", "--seed", "0",
                           "--json"], cwd=ROOT, capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout)
    return SAMPLE_PROMPT + out["completion"]


def record(preset: str, rec: dict) -> dict:
    rec["train_s"] = train_seconds(ROOT / rec["run_dir"])
    if preset.startswith("gpt-"):
        rec["sample"] = sample(rec["run_dir"])
    return rec


def fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "—"


def render(records: dict) -> str:
    presets = records["presets"]
    lines = [
        "# Results: language models", "",
        "Written by `scripts/results/lm.py` (`make results-lm`); do not edit by hand. Each figure comes from one",
        "`dlforge train PRESET` run on this machine (its eval.json); training is the loop (run folder to last",
        "checkpoint), wall-clock the whole command including the final evaluation of every split.", "",
        f"Machine: {records.get('machine', resultstools.machine())}.", "",
        "| preset | split | metric | value | target | steps | training | wall-clock | measured |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for preset, rows in TARGETS.items():
        r = presets.get(preset)
        if r is None:
            continue
        for i, (split, metric, target) in enumerate(rows):
            value = r[split].get(metric)
            if i == 0:
                train = f"{r['train_s'] / 60:.1f} min" if r.get("train_s") else "—"
                lines.append(f"| **{preset}** | {split} | {metric} | **{fmt(value)}** | {target} | {r['steps']} | "
                             f"{train} | {r['wall_s'] / 60:.1f} min | {r['measured']} |")
            elif value is not None:
                lines.append(f"| | {split} | {metric} | {fmt(value)} | {target} | | | | |")
    notes = [(p, presets[p]["note"]) for p in TARGETS if p in presets and presets[p].get("note")]
    if notes:
        lines += [""] + [f"- {preset}: {note}" for preset, note in notes]
    genre = records.get("genre")
    if genre:
        lines += ["", "## Genre of a Shakespeare passage (held-out plays)", "",
                  f"`python scripts/studies/genre_baseline.py latest:genre-minilm latest:genre-bert-small`: "
                  f"{genre['passages']['test']} test passages from {len(genre['plays']['test'])} plays "
                  f"({', '.join(genre['plays']['test'])}), labels {', '.join(genre['labels'])}; the baseline is "
                  f"TF-IDF (1-2 grams) + logistic regression with C={genre['baseline']['C']} chosen on validation.",
                  "", "| model | test macro-F1 | test accuracy |", "|---|---|---|"]
        for row in genre["rows"]:
            lines.append(f"| {row['name']} | {fmt(row['test/f1'])} | {fmt(row['test/accuracy'])} |")
    samples = [(p, presets[p]["sample"]) for p in TARGETS if p in presets and presets[p].get("sample")]
    if samples:
        lines += ["", "## Samples", "",
                  f"`dlforge generate RUN --prompt \"{SAMPLE_PROMPT}\" --max-new-tokens 120 --temperature 0.8 "
                  "--top-k 50 --seed 0`:"]
        for preset, text in samples:
            lines += ["", f"{preset}:", "", "```", text.strip(), "```"]
    bench = records.get("bench", {})
    if bench:
        lines += ["", "## Benchmarks (interleaved paired rounds, one process)", ""]
        if "gpt_train" in bench:
            b = bench["gpt_train"]
            lines.append(f"- `python bench/gpt_train.py`: {b['model']}, batch {b['batch_size']}, fp32, "
                         f"{b['rounds']} rounds: tokens/s dlforge {b['tokens_per_s_dlforge']:.0f}, transformers "
                         f"GPT2LMHeadModel {b['tokens_per_s_transformers']:.0f}; **ratio median "
                         f"{b['ratio_median']:.3f}** (min {b['ratio_min']:.3f}, max {b['ratio_max']:.3f}; target "
                         f">= 1.0, goal 1.25). Model-FLOPs utilisation against a measured fp32 matmul peak of "
                         f"{b['matmul_peak_gflops']:.0f} GFLOP/s: dlforge {b['mfu_dlforge']:.1%}, transformers "
                         f"{b['mfu_transformers']:.1%}.")
        if "generate" in bench:
            b = bench["generate"]
            rr, rh = b["ratio_vs_recompute"], b["ratio_vs_transformers"]
            lines.append(f"- `python bench/generate.py`: {b['model']}, {b['new_tokens']} new tokens from "
                         f"{b['prompt_tokens']}, batch 1, {b['rounds']} rounds, same tokens from all three: "
                         f"{b['same_tokens']}. KV cache {b['tokens_per_s_kv_cache']:.0f} tokens/s against "
                         f"recomputing {b['tokens_per_s_recompute']:.0f}: **median {rr['median']:.2f}x** (min "
                         f"{rr['min']:.2f}, max {rr['max']:.2f}; target >= 5); against transformers' generate "
                         f"{b['tokens_per_s_transformers']:.0f}: **median {rh['median']:.2f}x** (min {rh['min']:.2f}, "
                         f"max {rh['max']:.2f}; target >= 1.5).")
        if "bert_step" in bench:
            b = bench["bert_step"]
            lines.append(f"- `python bench/bert_step.py`: {b['model']}, batch {b['batch_size']} x {b['length']} "
                         f"tokens, {b['rounds']} rounds: samples/s dlforge {b['samples_per_s_dlforge']:.1f}, "
                         f"transformers BertForSequenceClassification {b['samples_per_s_baseline']:.1f}; **ratio "
                         f"median {b['ratio_median']:.3f}** (min {b['ratio_min']:.3f}, max {b['ratio_max']:.3f}; "
                         f"target >= 1.0).")
    lines += _linked_pages()
    lines += ["", "## Not measured here", "",
              "- The GPT-2 124M preset (`gpt2-124m`) in bf16 with SDPA and torch.compile on a GPU, and its MFU: this",
              "  machine has no GPU. `dlforge train gpt2-124m train.mfu=true` reports it where one is at hand."]
    return "\n".join(lines) + "\n"


def _linked_pages() -> list[str]:
    out = []
    domain = resultstools.RESULTS / "domain_adaptation.json"
    if domain.exists():
        d = json.loads(domain.read_text())
        v = d["verdict"]
        bible = {m: d["perplexity"][m]["bible_web"]["perplexity"] for m in ("base", "adapted", "scratch")}
        out += ["", "## Domain adaptation (docs/results/domain_adaptation.md)", "",
                f"`python scripts/studies/domain_adaptation.py`: Bible validation perplexity base {bible['base']:.2f}, "
                f"adapted {bible['adapted']:.2f}, scratch {bible['scratch']:.2f}: continued pretraining closed "
                f"**{100 * v['share_of_gap_closed']:.1f}% of the gap** (target >= 50%)"
                + (", the scratch model still slightly ahead" if bible["adapted"] > bible["scratch"] else "")
                + f"; Shakespeare perplexity {v['shakespeare_forgotten']:+.2f} (forgotten)."]
    sft = resultstools.RESULTS / "instruction_tuning.json"
    if sft.exists():
        j = json.loads(sft.read_text())["judged"]
        out += ["", "## Instruction tuning (docs/results/instruction_tuning.md)", "",
                "`python scripts/studies/instruction_tuning.py`: test exact match of the greedy answer, base (untuned) "
                f"{j['base']['test']['exact_match']:.3f}, full SFT {j['full']['test']['exact_match']:.3f}, LoRA "
                f"{j['lora']['test']['exact_match']:.3f}; answer-token accuracy {j['base']['test']['accuracy']:.3f}, "
                f"{j['full']['test']['accuracy']:.3f}, {j['lora']['test']['accuracy']:.3f}. The test questions are"
                " about plays never trained on, or ask a question never trained on: tuning teaches the form of the"
                " answer (a character for who-questions, a play for which-play questions), which the answer-token"
                " accuracy shows, while the facts of unseen plays are beyond any model that never read them."]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("presets", nargs="*", help="presets to train and record ('all': every one in the table)")
    ap.add_argument("--import", dest="imports", action="append", default=[], metavar="PRESET=FILE",
                    help="record the output of a `dlforge train PRESET --json` run saved in FILE")
    ap.add_argument("--genre", action="store_true", help="run the genre baseline against the newest genre runs")
    ap.add_argument("--bench", action="append", nargs="?", const="all", default=[],
                    help="run a benchmark (or all of them) with --json")
    args = ap.parse_args()
    records = resultstools.load(RECORDS, {"presets": {}, "bench": {}})
    records["machine"] = resultstools.machine()
    for item in args.imports:
        preset, _, path = item.partition("=")
        if preset not in TARGETS:
            raise SystemExit(f"--import {item}: {preset} is not in this table; expected one of {', '.join(TARGETS)}")
        records["presets"][preset] = record(preset, resultstools.record_run(json.loads(Path(path).read_text())))
        resultstools.save(RECORDS, records)
    presets = list(TARGETS) if args.presets == ["all"] else args.presets
    for preset in presets:
        if preset not in TARGETS:
            raise SystemExit(f"{preset}: not in this table; expected one of {', '.join(TARGETS)}")
        records["presets"][preset] = record(preset, resultstools.run_preset(preset))
        resultstools.save(RECORDS, records)
        print(json.dumps({preset: records["presets"][preset]["test"]}), flush=True)
    if args.genre:
        records["genre"] = resultstools.run_json(["scripts/studies/genre_baseline.py", "latest:genre-minilm",
                                                  "latest:genre-bert-small", "--json"])
        resultstools.save(RECORDS, records)
    benches = list(BENCHES) if "all" in args.bench else args.bench
    for name in benches:
        records["bench"][name] = resultstools.run_bench(name, BENCHES.get(name, []))
        resultstools.save(RECORDS, records)
        print(json.dumps({name: records["bench"][name]}), flush=True)
    OUT.write_text(render(records))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    run_script(main)  # a DlforgeError: one line and exit code 2, as in the CLI
