"""GPT training throughput: dlforge's GPT through the Trainer against transformers' GPT2LMHeadModel in a plain loop.

Both sides: nanoGPT's CPU shape (4 layers, 4 heads, width 128, context 64), batch 12, fp32, dropout 0, the head
tied to the token embedding, AdamW (lr 1e-3, no weight decay), on the same windows of the Shakespeare plays
(`shakespeare_char`), each library on its default fast path (dlforge: SDPA's causal kernel; transformers: its
default attention implementation). The dlforge side runs as `dlforge train` would: the Trainer with its JSONL
metrics logger. Paired, interleaved rounds; prints the median tokens/s ratio dlforge/transformers (target >= 1.0,
goal 1.25) with its min and max, and each side's model-FLOPs utilization (6 N + 12 L T C per token) against the
fp32 matmul peak this script measures on this machine.

    python bench/gpt_train.py [--rounds 10] [--steps 30] [--json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from dlforge.config import TrainConfig
from dlforge.data.chartext import CharTextConfig, shakespeare_char
from dlforge.data.dataset import TensorDictDataset
from dlforge.eval.mfu import matmul_peak, mfu
from dlforge.registry import create_model
from dlforge.train.callbacks import MetricsLogger
from dlforge.train.trainer import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from paired import StepClock, hand_loop, paired_rounds, per_step, summary  # noqa: E402

LAYERS, HEADS, WIDTH, CONTEXT, BATCH, LR = 4, 4, 128, 64, 12, 1e-3


def shakespeare_windows(limit: int) -> tuple[TensorDictDataset, int]:
    """The first `limit` training windows of 64 characters (input_ids, next-character labels), and the vocabulary."""
    data = shakespeare_char(CharTextConfig(name="shakespeare_char", context=CONTEXT))
    tensors = data.train.tensors
    return TensorDictDataset({k: t[:limit].clone() for k, t in tensors.items()}), data.info["vocab_size"]


def dlforge_model(vocab: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("gpt", vocab_size=vocab, context=CONTEXT, dim=WIDTH, n_layers=LAYERS, n_heads=HEADS,
                        dropout=0.0, tie_weights=True)


def transformers_model(vocab: int) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=vocab, n_positions=CONTEXT, n_embd=WIDTH, n_layer=LAYERS, n_head=HEADS,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
                        bos_token_id=None, eos_token_id=None)
    return GPT2LMHeadModel(config)


def dlforge_round(steps: int, data: TensorDictDataset, vocab: int, run_dir: Path) -> float:
    model = dlforge_model(vocab)
    cfg = TrainConfig(max_steps=steps, batch_size=BATCH, optimizer="adamw", lr=LR, weight_decay=0.0, log_every=10,
                      checkpoint_every=None, eval_every=10**9, progress=False, tensorboard=False, device="cpu")
    clock = StepClock()
    Trainer(model, cfg, data, callbacks=[MetricsLogger(run_dir, tensorboard=False), clock]).fit()
    return per_step(clock.times)


def transformers_round(steps: int, data: TensorDictDataset, vocab: int) -> float:
    model = transformers_model(vocab).train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    ids = data.tensors["input_ids"]

    def step(idx: torch.Tensor) -> None:
        batch = ids[idx]
        model(input_ids=batch, labels=batch).loss.backward()  # transformers shifts the labels itself
        opt.step()
        opt.zero_grad(set_to_none=True)

    return hand_loop(step, len(ids), BATCH, steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true", help="2 rounds of 5 steps: a smoke check, not a measurement")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.steps = 2, 5

    data, vocab = shakespeare_windows(limit=BATCH * 200)
    flops = dlforge_model(vocab).flops_per_token(CONTEXT)
    peak = matmul_peak("cpu", torch.float32)
    with tempfile.TemporaryDirectory() as tmp:
        transformers_round(3, data, vocab)  # warm up both
        dlforge_round(3, data, vocab, Path(tmp))

        def ours(r: int) -> float:
            run_dir = Path(tmp) / f"r{r}"
            run_dir.mkdir()
            return dlforge_round(args.steps, data, vocab, run_dir)

        t_ours, t_hf = paired_rounds(ours, lambda r: transformers_round(args.steps, data, vocab), args.rounds)
    tokens = BATCH * CONTEXT
    s = summary(t_ours, t_hf, BATCH)
    shape = f"gpt {LAYERS} layers, {HEADS} heads, width {WIDTH}, context {CONTEXT}"
    result = {"benchmark": "gpt_train", "model": shape,
              "batch_size": BATCH, "rounds": args.rounds, "steps_per_round": args.steps,
              "threads": torch.get_num_threads(),
              "tokens_per_s_dlforge": tokens / statistics.median(t_ours),
              "tokens_per_s_transformers": tokens / statistics.median(t_hf),
              "ratio_median": s["ratio_median"], "ratio_min": s["ratio_min"], "ratio_max": s["ratio_max"],
              "flops_per_token": flops, "matmul_peak_gflops": peak / 1e9}
    result["mfu_dlforge"] = mfu(flops, result["tokens_per_s_dlforge"], peak)
    result["mfu_transformers"] = mfu(flops, result["tokens_per_s_transformers"], peak)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['model']}, batch {BATCH}, fp32, {args.rounds} paired rounds of {args.steps} steps, "
          f"{result['threads']} threads")
    print(f"tokens/s: dlforge {result['tokens_per_s_dlforge']:.0f}, transformers "
          f"{result['tokens_per_s_transformers']:.0f} (medians)")
    print(f"ratio dlforge/transformers: median {result['ratio_median']:.3f}  min {result['ratio_min']:.3f}  "
          f"max {result['ratio_max']:.3f}  (target >= 1.0, goal 1.25)")
    print(f"MFU against a measured fp32 matmul peak of {result['matmul_peak_gflops']:.1f} GFLOP/s "
          f"({flops / 1e6:.2f} MFLOP per token): dlforge {result['mfu_dlforge']:.1%}, "
          f"transformers {result['mfu_transformers']:.1%}")


if __name__ == "__main__":
    main()
