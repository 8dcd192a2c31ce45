"""Trainer overhead: the dlforge Trainer against a minimal hand-written PyTorch loop.

Same MLP, same data, same optimizer (AdamW), same batch size; the two run interleaved in one process for `--rounds`
paired rounds (the order alternates each round so drift hits both alike). Each side's step time is the median interval
between its consecutive optimizer steps (epoch boundaries included), so set-up is left out. Prints the median ratio
trainer / hand loop with its min and max: 1.00 means no overhead. The Trainer runs as `dlforge train` would,
with its JSONL metrics logger on.

    python bench/trainer_overhead.py [--rounds 12] [--steps 80] [--json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from dlforge.config import TrainConfig
from dlforge.data.dataset import TensorDictDataset
from dlforge.registry import create_model
from dlforge.train.callbacks import MetricsLogger
from dlforge.train.trainer import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from paired import StepClock, hand_loop, per_step  # noqa: E402

IN, HIDDEN, CLASSES, N, BATCH = 256, [512, 512], 10, 16384, 256


def trainer_round(model: torch.nn.Module, data: TensorDictDataset, steps: int, run_dir: Path) -> float:
    cfg = TrainConfig(max_steps=steps, batch_size=BATCH, optimizer="adamw", lr=1e-3, log_every=50,
                      checkpoint_every=None, progress=False, tensorboard=False, device="cpu")
    clock = StepClock()
    Trainer(model, cfg, data, callbacks=[MetricsLogger(run_dir, tensorboard=False), clock]).fit()
    return per_step(clock.times)


def hand_round(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    model.train()

    def step(idx: torch.Tensor) -> None:
        model({"x": x[idx], "y": y[idx]}).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return hand_loop(step, len(x), BATCH, steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    torch.manual_seed(0)
    x, y = torch.randn(N, IN), torch.randint(0, CLASSES, (N,))
    data = TensorDictDataset({"x": x, "y": y})
    base = create_model("mlp", in_features=IN, out_features=CLASSES, hidden=HIDDEN)
    ratios, t_trainer, t_hand = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        hand_round(copy.deepcopy(base), x, y, 10)  # warm up allocator and kernels
        for r in range(args.rounds):
            run_dir = Path(tmp) / f"r{r}"
            run_dir.mkdir()
            if r % 2 == 0:
                a = trainer_round(copy.deepcopy(base), data, args.steps, run_dir)
                b = hand_round(copy.deepcopy(base), x, y, args.steps)
            else:
                b = hand_round(copy.deepcopy(base), x, y, args.steps)
                a = trainer_round(copy.deepcopy(base), data, args.steps, run_dir)
            t_trainer.append(a)
            t_hand.append(b)
            ratios.append(a / b)
    result = {"benchmark": "trainer_overhead", "rounds": args.rounds, "steps_per_round": args.steps,
              "model": f"mlp {IN}-{'-'.join(map(str, HIDDEN))}-{CLASSES}", "batch_size": BATCH,
              "threads": torch.get_num_threads(),
              "median_step_ms_trainer": statistics.median(t_trainer) * 1e3,
              "median_step_ms_hand": statistics.median(t_hand) * 1e3,
              "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"model {result['model']}, batch {BATCH}, {args.rounds} paired rounds of {args.steps} steps, "
          f"{result['threads']} threads")
    print(f"step time: trainer {result['median_step_ms_trainer']:.3f} ms, hand loop "
          f"{result['median_step_ms_hand']:.3f} ms (medians)")
    print(f"ratio trainer/hand: median {result['ratio_median']:.3f}  min {result['ratio_min']:.3f}  "
          f"max {result['ratio_max']:.3f}  (target <= 1.05, goal <= 1.02)")


if __name__ == "__main__":
    main()
