"""BERT fine-tuning throughput: dlforge's BERT classifier through the Trainer against transformers'
BertForSequenceClassification trained by a plain loop.

Both sides: all-MiniLM-L6-v2's shape (6 layers, 384 wide, 12 heads, feed-forward 1536, 30522 WordPiece ids, 512
positions), randomly initialized, 3 classes, dropout 0.1 (hidden and attention), AdamW at lr 2e-5, fp32, the same
`--batch` x `--length` token batches drawn from one data set (unpadded, attention mask all ones; `--padded` gives each
row a random length from half to all of it). transformers runs its SDPA attention. The dlforge side runs as `dlforge
train` would: the Trainer with its JSONL metrics logger. Paired, interleaved rounds; prints the median samples/s ratio
dlforge/transformers (1.00 = as fast; target >= 1.0) with its min and max.

    python bench/bert_step.py [--rounds 10] [--steps 6] [--batch 16] [--length 128] [--padded] [--json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from dlforge.config import TrainConfig
from dlforge.data.dataset import TensorDictDataset
from dlforge.registry import create_model
from dlforge.train.callbacks import MetricsLogger
from dlforge.train.trainer import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from paired import StepClock, hand_loop, paired_rounds, per_step, summary  # noqa: E402

N, CLASSES, LR = 512, 3, 2e-5
SHAPE = {"vocab_size": 30522, "dim": 384, "n_layers": 6, "n_heads": 12, "ffn_hidden": 1536, "context": 512}


def make_data(batch: int, length: int, padded: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, SHAPE["vocab_size"], (N, length), generator=g)
    ids[:, 0], mask = 101, torch.ones(N, length, dtype=torch.long)  # [CLS] first
    if padded:
        lengths = torch.randint(length // 2, length + 1, (N,), generator=g)
        mask = (torch.arange(length) < lengths[:, None]).long()
        ids = ids * mask
    return {"input_ids": ids, "attention_mask": mask, "y": torch.randint(0, CLASSES, (N,), generator=g)}


def dlforge_round(data: TensorDictDataset, batch: int, steps: int, run_dir: Path) -> float:
    torch.manual_seed(0)
    model = create_model("bert_classifier", **SHAPE, num_classes=CLASSES)
    cfg = TrainConfig(max_steps=steps, batch_size=batch, optimizer="adamw", lr=LR, log_every=10,
                      checkpoint_every=None, progress=False, tensorboard=False, device="cpu")
    clock = StepClock()
    Trainer(model, cfg, data, callbacks=[MetricsLogger(run_dir, tensorboard=False), clock]).fit()
    return per_step(clock.times)


def transformers_round(tensors: dict[str, torch.Tensor], batch: int, steps: int) -> float:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=SHAPE["vocab_size"], hidden_size=SHAPE["dim"], num_hidden_layers=SHAPE["n_layers"],
                        num_attention_heads=SHAPE["n_heads"], intermediate_size=SHAPE["ffn_hidden"],
                        max_position_embeddings=SHAPE["context"], num_labels=CLASSES, layer_norm_eps=1e-12,
                        attn_implementation="sdpa")
    model = BertForSequenceClassification(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR)

    def step(idx: torch.Tensor) -> None:
        out = model(input_ids=tensors["input_ids"][idx], attention_mask=tensors["attention_mask"][idx])
        F.cross_entropy(out.logits, tensors["y"][idx]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return hand_loop(step, N, batch, steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps per round and side")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--padded", action="store_true", help="rows of random lengths (half to all of --length)")
    ap.add_argument("--quick", action="store_true", help="a smoke check: 2 rounds of 3 steps, batch 4, length 32")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.steps, args.batch, args.length = 2, 3, 4, 32
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    tensors = make_data(args.batch, args.length, args.padded)
    data = TensorDictDataset(tensors)
    with tempfile.TemporaryDirectory() as tmp:
        transformers_round(tensors, args.batch, 2)  # warm up allocator and kernels

        def ours(r: int) -> float:
            run_dir = Path(tmp) / f"r{r}"
            run_dir.mkdir()
            return dlforge_round(data, args.batch, args.steps, run_dir)

        t_ours, t_hf = paired_rounds(ours, lambda r: transformers_round(tensors, args.batch, args.steps), args.rounds)
    result = {"benchmark": "bert_step", "model": "BERT classifier at all-MiniLM-L6-v2's shape (6x384, 12 heads)",
              "batch_size": args.batch, "length": args.length, "padded": args.padded, "rounds": args.rounds,
              "steps_per_round": args.steps, "threads": torch.get_num_threads(), **summary(t_ours, t_hf, args.batch)}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['model']}, batch {args.batch} x {args.length} tokens{' (padded)' if args.padded else ''}, "
          f"{args.rounds} paired rounds of {args.steps} steps, {result['threads']} threads")
    print(f"samples/s: dlforge {result['samples_per_s_dlforge']:.2f}, transformers "
          f"{result['samples_per_s_baseline']:.2f} (medians)")
    print(f"ratio dlforge/transformers: median {result['ratio_median']:.3f}  min {result['ratio_min']:.3f}  "
          f"max {result['ratio_max']:.3f}  (target >= 1.0)")


if __name__ == "__main__":
    main()
