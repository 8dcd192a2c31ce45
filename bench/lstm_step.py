"""LSTM training throughput: dlforge's LSTM forecaster through the Trainer against the same architecture written as
a plain PyTorch module and trained by a plain loop.

Both sides: a 2-layer LSTM (hidden `--hidden`) over windows of `--window` steps of one feature, its last hidden state
through a linear head to an 8-step forecast, mse, Adam, batch `--batch` — the shape of the co2 presets. The dlforge
side runs as `dlforge train` would: the Trainer with its JSONL metrics logger. Paired, interleaved rounds; prints the
median samples/s ratio dlforge/plain (1.00 = as fast as plain PyTorch; target >= 0.97) with its min and max.

    python bench/lstm_step.py [--rounds 10] [--steps 30] [--hidden 64] [--window 104] [--batch 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dlforge.config import TrainConfig
from dlforge.data.dataset import TensorDictDataset
from dlforge.registry import create_model
from dlforge.train.callbacks import MetricsLogger
from dlforge.train.trainer import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from paired import StepClock, hand_loop, paired_rounds, per_step, summary  # noqa: E402

N, HORIZON, LAYERS = 4096, 8, 2


class PlainLSTMForecaster(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.lstm = nn.LSTM(1, hidden, num_layers=LAYERS, batch_first=True)
        self.head = nn.Linear(hidden, HORIZON)

    def forward(self, x):
        _, (h, _) = self.lstm(x)
        return self.head(h[-1])


def dlforge_round(args, data: TensorDictDataset, run_dir: Path) -> float:
    torch.manual_seed(0)
    model = create_model("lstm_forecaster", in_features=1, dim=args.hidden, n_layers=LAYERS,
                         horizon=HORIZON)
    cfg = TrainConfig(max_steps=args.steps, batch_size=args.batch, optimizer="adam", lr=1e-3, log_every=10,
                      checkpoint_every=None, progress=False, tensorboard=False, device="cpu")
    clock = StepClock()
    Trainer(model, cfg, data, callbacks=[MetricsLogger(run_dir, tensorboard=False), clock]).fit()
    return per_step(clock.times)


def plain_round(args, x: torch.Tensor, y: torch.Tensor) -> float:
    torch.manual_seed(0)
    model = PlainLSTMForecaster(args.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def step(idx: torch.Tensor) -> None:
        F.mse_loss(model(x[idx]), y[idx]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return hand_loop(step, len(x), args.batch, args.steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--window", type=int, default=104)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(N, args.window, 1, generator=g), torch.randn(N, HORIZON, generator=g)
    data = TensorDictDataset({"x": x, "y": y})
    with tempfile.TemporaryDirectory() as tmp:
        plain_round(argparse.Namespace(**{**vars(args), "steps": 3}), x, y)  # warm up

        def ours(r: int) -> float:
            run_dir = Path(tmp) / f"r{r}"
            run_dir.mkdir()
            return dlforge_round(args, data, run_dir)

        t_ours, t_plain = paired_rounds(ours, lambda r: plain_round(args, x, y), args.rounds)
    result = {"benchmark": "lstm_step",
              "model": f"lstm {LAYERS}x{args.hidden}, window {args.window}, horizon {HORIZON}",
              "batch_size": args.batch, "rounds": args.rounds, "steps_per_round": args.steps,
              "threads": torch.get_num_threads(), **summary(t_ours, t_plain, args.batch)}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['model']}, batch {args.batch}, {args.rounds} paired rounds of {args.steps} steps, "
          f"{result['threads']} threads")
    print(f"samples/s: dlforge {result['samples_per_s_dlforge']:.1f}, plain PyTorch "
          f"{result['samples_per_s_baseline']:.1f} (medians)")
    print(f"ratio dlforge/plain: median {result['ratio_median']:.3f}  min {result['ratio_min']:.3f}  "
          f"max {result['ratio_max']:.3f}  (target >= 0.97)")


if __name__ == "__main__":
    main()
