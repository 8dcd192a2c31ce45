"""Generation speed at batch 1: dlforge's KV-cache decoding against (a) the same model recomputing the whole context
for every new token and (b) transformers' `generate` on the same weights (exported with dlforge's GPT-2 converter).

The model: GPT-2's design (learned positions, LayerNorm, GELU MLP, tied head) at the char preset's size, 4 layers,
4 heads, width 128, the Shakespeare characters' vocabulary of 80, and a context of 320 = 64 + 256, so that the whole
generation fits the window (no side slides it; transformers' GPT-2 cannot). Random weights: speed does not depend on
them. Each round: 256 new tokens, greedy, from a 64-token prompt, all three alike, fp32, inference mode; the three
must produce the same tokens. Paired, interleaved rounds; prints tokens/s and the median ratios (targets: >= 5
against recomputation, >= 1.5 against transformers) with their min and max.

    python bench/generate.py [--rounds 10] [--new 256] [--json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from dlforge.artifacts import save_model
from dlforge.llm.generate import GenerationConfig, generate_tokens
from dlforge.llm.gpt2 import export_gpt2
from dlforge.registry import create_model

sys.path.insert(0, str(Path(__file__).parent))
from paired import paired_rounds, summary  # noqa: E402

LAYERS, HEADS, WIDTH, VOCAB, PROMPT = 4, 4, 128, 80, 64


def kv_cache(model: torch.nn.Module, prompt: torch.Tensor, new: int) -> torch.Tensor:
    config = GenerationConfig(max_new_tokens=new, temperature=0)
    return torch.stack(list(generate_tokens(model, prompt, config=config)), dim=1)


@torch.inference_mode()
def recompute(model: torch.nn.Module, prompt: torch.Tensor, new: int) -> torch.Tensor:
    ids = prompt
    for _ in range(new):  # every step reads everything so far again
        logits = model({"input_ids": ids}).logits[:, -1]
        ids = torch.cat([ids, logits.argmax(dim=-1, keepdim=True)], dim=1)
    return ids[:, prompt.shape[1]:]


@torch.inference_mode()
def hf_generate(model: torch.nn.Module, prompt: torch.Tensor, new: int) -> torch.Tensor:
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=new,
                         min_new_tokens=new, pad_token_id=0)
    return out[:, prompt.shape[1]:]


def timed(fn, *args) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--new", type=int, default=256, help="new tokens per generation")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true", help="2 rounds of 32 tokens: a smoke check, not a measurement")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.new = 2, 32

    from transformers import GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    model = create_model("gpt", vocab_size=VOCAB, context=PROMPT + args.new, dim=WIDTH, n_layers=LAYERS,
                         n_heads=HEADS).eval()
    with tempfile.TemporaryDirectory() as tmp:
        save_model(model, Path(tmp) / "model")
        hf = GPT2LMHeadModel.from_pretrained(export_gpt2(Path(tmp) / "model", Path(tmp) / "gpt2")).eval()
    prompt = torch.randint(0, VOCAB, (1, PROMPT), generator=torch.Generator().manual_seed(0))

    outputs: dict[str, torch.Tensor] = {}

    def run(name: str, fn, target: torch.nn.Module):
        def go(_round: int) -> float:
            seconds, outputs[name] = timed(fn, target, prompt, args.new)
            return seconds / args.new  # per token
        return go

    for name, fn, target in (("kv", kv_cache, model), ("recompute", recompute, model), ("hf", hf_generate, hf)):
        run(name, fn, target)(0)  # warm up
    t_kv, t_full = paired_rounds(run("kv", kv_cache, model), run("recompute", recompute, model), args.rounds)
    t_kv2, t_hf = paired_rounds(run("kv", kv_cache, model), run("hf", hf_generate, hf), args.rounds)
    same = torch.equal(outputs["kv"], outputs["recompute"]) and torch.equal(outputs["kv"], outputs["hf"])
    vs_full, vs_hf = summary(t_kv, t_full, 1), summary(t_kv2, t_hf, 1)
    result = {"benchmark": "generate", "model": f"gpt (GPT-2 design) {LAYERS} layers, {HEADS} heads, width {WIDTH}, "
              f"vocab {VOCAB}, context {PROMPT + args.new}", "prompt_tokens": PROMPT, "new_tokens": args.new,
              "batch_size": 1, "rounds": args.rounds, "threads": torch.get_num_threads(), "same_tokens": same,
              "tokens_per_s_kv_cache": vs_full["samples_per_s_dlforge"],
              "tokens_per_s_recompute": vs_full["samples_per_s_baseline"],
              "tokens_per_s_transformers": vs_hf["samples_per_s_baseline"],
              "ratio_vs_recompute": {k: vs_full[f"ratio_{k}"] for k in ("median", "min", "max")},
              "ratio_vs_transformers": {k: vs_hf[f"ratio_{k}"] for k in ("median", "min", "max")}}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['model']}; {args.new} new tokens from {PROMPT}, greedy, batch 1, {args.rounds} paired rounds, "
          f"{result['threads']} threads; the same tokens from all three: {'yes' if same else 'NO'}")
    print(f"tokens/s: dlforge KV cache {result['tokens_per_s_kv_cache']:.0f}, recomputing "
          f"{result['tokens_per_s_recompute']:.0f}, transformers generate {result['tokens_per_s_transformers']:.0f}")
    for name, key, target in (("recompute", "ratio_vs_recompute", 5), ("transformers", "ratio_vs_transformers", 1.5)):
        r = result[key]
        print(f"ratio KV cache / {name}: median {r['median']:.2f}  min {r['min']:.2f}  max {r['max']:.2f}  "
              f"(target >= {target})")


if __name__ == "__main__":
    main()
