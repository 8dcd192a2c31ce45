"""Instruction tuning, measured: the Shakespeare GPT before tuning, after full fine-tuning (gpt-shakespeare-sft) and
with LoRA adapters (gpt-shakespeare-sft-lora), on the held-out questions of the shakespeare_qa set.

    python scripts/studies/instruction_tuning.py             # base: the newest gpt-shakespeare-bpe run (trained if
                                                             # there is none); trains both SFT presets from it;
                                                             # writes docs/results/instruction_tuning.md + .json
    python scripts/studies/instruction_tuning.py --base RUN --full RUN --lora RUN     # only measure
    python scripts/studies/instruction_tuning.py --quick     # a smoke check: a few steps each, written to /tmp

Every model is judged the same way on the validation and test splits (see scripts/datasets/shakespeare_qa.py):
next-token accuracy and perplexity on the answer tokens (teacher-forced, the end-of-text token included), and exact
match of the greedy reply (case, spaces, quotes and a final full stop ignored), overall, per kind of holdout (`play`:
questions about plays never trained on; `template`: a question never asked in training about plays that were) and per
question template. The base model gets the same chat-templated prompts, untuned.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from dlforge.cli.main import run_script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for resultstools: scripts/README.md
import resultstools  # noqa: E402

ROOT = resultstools.ROOT
QUICK = ["train.max_steps=6", "train.warmup_steps=1", "train.eval_every=3", "train.checkpoint_every=3",
         "train.log_every=2"]
MODELS = ("base", "full", "lora")
SAMPLES = 6


def judge(model: torch.nn.Module, data, split: str) -> dict:
    """Answer-token metrics and exact match of one model on one split of the SFT data."""
    from dlforge.data.sft import records_of
    from dlforge.eval.evaluate import evaluate_model
    from dlforge.eval.metrics import TaskMetrics
    from dlforge.llm.chat import answer_report

    ds = data.split(split)
    scores = evaluate_model(model, ds, TaskMetrics.from_info(data.info, split=split))
    report = answer_report(model, data.tokenizer, records_of(ds))[1]
    return {**scores, **report}


def parameters(run: Path | None, model: torch.nn.Module) -> dict:
    total = sum(p.numel() for p in model.parameters())
    if run is None or not (run / "adapter").is_dir():
        return {"total": total, "trainable": total if run is not None else 0}
    from dlforge.llm.lora import read_adapter

    adapter = read_adapter(run / "adapter")[2]
    return {"total": total, "trainable": sum(t.numel() for t in adapter.values()),
            "adapter_bytes": (run / "adapter" / "adapter_model.safetensors").stat().st_size}


def markdown(result: dict) -> str:
    names = {"base": "gpt-shakespeare-bpe, untuned", "full": "gpt-shakespeare-sft (full)",
             "lora": "gpt-shakespeare-sft-lora (LoRA)"}
    j = result["judged"]
    lines = [
        "# Instruction tuning: questions about the plays", "",
        "Written by `scripts/studies/instruction_tuning.py`; do not edit by hand. The shakespeare_qa set "
        "(`dlforge/data/instructions/`, written by `scripts/datasets/shakespeare_qa.py`): test = questions about 3 "
        "plays never trained on (`play`) and a question template never trained on, about the training plays "
        "(`template`: who speaks last). Answer-token figures are teacher-forced; exact match is the greedy reply.", "",
        f"Machine: {result['machine']}.", "",
        "| model | trainable parameters | test answer-token accuracy | test answer perplexity | test exact match | "
        "held-out plays | held-out template | val exact match | wall-clock |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in MODELS:
        t, v, p = j[m]["test"], j[m]["val"], result["parameters"][m]
        holdout = t.get("by_holdout", {})
        wall = result["wall_s"].get(m)
        lines.append(
            f"| {names[m]} | {p['trainable']:,} of {p['total']:,} | {t['accuracy']:.3f} | {t['perplexity']:.2f} | "
            f"{t['exact_match']:.3f} | {holdout.get('play', {}).get('exact_match', float('nan')):.3f} | "
            f"{holdout.get('template', {}).get('exact_match', float('nan')):.3f} | {v['exact_match']:.3f} | "
            f"{f'{wall / 60:.1f} min' if wall else '(given)'} |")
    templates = sorted(set(j["full"]["test"].get("by_template", {})) | set(j["full"]["val"].get("by_template", {})))
    lines += ["", "Exact match per question template (validation and test together: n questions):", "",
              "| template | n | " + " | ".join(names[m] for m in MODELS) + " |",
              "|---|---|" + "---|" * len(MODELS)]
    for name in templates:
        cells, n = [], 0
        for m in MODELS:
            groups = [j[m][s].get("by_template", {}).get(name) for s in ("val", "test")]
            groups = [g for g in groups if g]
            n = sum(g["n"] for g in groups)
            cells.append(f"{sum(g['n'] * g['exact_match'] for g in groups) / n:.3f}" if n else "")
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "Sample test replies (greedy):", "", "| question | reference | " +
              " | ".join(names[m] for m in MODELS) + " |", "|---|---|" + "---|" * len(MODELS)]
    for i, sample in enumerate(j["full"]["test"]["samples"][:SAMPLES]):
        replies = [" ".join(j[m]["test"]["samples"][i]["reply"].replace("|", "/").split())[:60] for m in MODELS]
        lines.append(f"| {sample['question'][:80]} | {sample['reference']} | " + " | ".join(replies) + " |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="the base run (default: the newest gpt-shakespeare-bpe, trained if none)")
    parser.add_argument("--full", help="a gpt-shakespeare-sft run (default: train one from the base)")
    parser.add_argument("--lora", help="a gpt-shakespeare-sft-lora run (default: train one from the base)")
    resultstools.study_arguments(parser, "instruction_tuning")
    args = parser.parse_args()
    from dlforge.api import build_data, load
    from dlforge.config import load_config
    from dlforge.errors import DlforgeError
    from dlforge.runs.rundir import resolve_run

    extra = QUICK if args.quick else []
    out = resultstools.out_folder(args, "sft-")
    walls: dict[str, float | None] = {"base": None}
    try:
        base = resolve_run(args.base or "latest:gpt-shakespeare-bpe", args.runs_dir)
    except DlforgeError:
        if args.base:
            raise
        quick = [*extra, "data.limit=256"] if args.quick else []
        base, walls["base"] = resultstools.train_in_process("gpt-shakespeare-bpe", quick, args.runs_dir)
    source = [f"train.init_from={base}", f"data.tokenizer={base}"]
    runs: dict[str, Path | None] = {"base": None}
    for name, preset, given in (("full", "gpt-shakespeare-sft", args.full),
                                ("lora", "gpt-shakespeare-sft-lora", args.lora)):
        runs[name], walls[name] = resultstools.train_in_process(preset, [*source, *extra], args.runs_dir, given)
    data = build_data(load_config("gpt-shakespeare-sft", source[1:]))  # the questions, the base's tokens + template
    judged, params = {}, {}
    for name in MODELS:
        model = load(runs[name] or base)
        judged[name] = {split: judge(model, data, split) for split in ("val", "test")}
        params[name] = parameters(runs[name], model)
    result = {"runs": {"base": str(base), **{k: str(v) for k, v in runs.items() if v}}, "judged": judged,
              "parameters": params, "wall_s": walls, "quick": args.quick}
    resultstools.write_study(out, "instruction_tuning", result, markdown)


if __name__ == "__main__":
    run_script(main)  # a DlforgeError: one line and exit code 2, as in the CLI
