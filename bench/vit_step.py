"""ViT training throughput: dlforge's ViT through the Trainer against the same network written with
`torch.nn.TransformerEncoder` and trained by a plain loop.

Both sides: 1x28x28 inputs (Fashion-MNIST's shape), `--patch` x `--patch` patches by a conv, a class token, learned
positions, `--layers` pre-norm encoder blocks `--dim` wide with `--heads` heads and a 4x GELU MLP (LayerNorm eps 1e-6,
dropout 0), a final LayerNorm, the class token's state to a Linear over 10 classes; AdamW at lr 1e-3 without weight
decay, fp32, batch `--batch`. The dlforge side runs as `dlforge train` would: the Trainer with its JSONL metrics
logger. Paired, interleaved rounds; prints the median samples/s ratio dlforge/plain (1.00 = as fast as plain PyTorch;
target >= 0.97) with its min and max.

    python bench/vit_step.py [--rounds 10] [--steps 10] [--patch 4] [--dim 128] [--layers 6] [--heads 4] [--batch 128]
                             [--json]
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

N, CLASSES, SIZE, LR = 4096, 10, 28, 1e-3


# --- the baseline: a ViT as anyone would write it over torch.nn.TransformerEncoder -----------------------------------


class PlainViT(nn.Module):
    def __init__(self, patch: int, dim: int, layers: int, heads: int):
        super().__init__()
        self.patch = nn.Conv2d(1, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 1 + (SIZE // patch) ** 2, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu", layer_norm_eps=1e-6,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)  # (B, N, C)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1) + self.pos
        return self.head(self.norm(self.encoder(tokens))[:, 0])


# --- one round of each --------------------------------------------------------------------------------------------


def dlforge_round(args, data: TensorDictDataset, run_dir: Path) -> float:
    torch.manual_seed(0)
    model = create_model("vit", patch_size=args.patch, dim=args.dim, n_layers=args.layers, n_heads=args.heads,
                         in_channels=1, image_size=SIZE, num_classes=CLASSES)
    cfg = TrainConfig(max_steps=args.steps, batch_size=args.batch, optimizer="adamw", lr=LR, weight_decay=0.0,
                      log_every=10, checkpoint_every=None, progress=False, tensorboard=False, device="cpu")
    clock = StepClock()
    Trainer(model, cfg, data, callbacks=[MetricsLogger(run_dir, tensorboard=False), clock]).fit()
    return per_step(clock.times)


def plain_round(args, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    torch.manual_seed(0)
    model = PlainViT(args.patch, args.dim, args.layers, args.heads)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    model.train()

    def step(idx: torch.Tensor) -> None:
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return hand_loop(step, len(x), args.batch, steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--patch", type=int, default=4)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(N, 1, SIZE, SIZE, generator=g), torch.randint(0, CLASSES, (N,), generator=g)
    data = TensorDictDataset({"x": x, "y": y})
    with tempfile.TemporaryDirectory() as tmp:
        plain_round(args, x, y, 3)  # warm up allocator and kernels

        def ours(r: int) -> float:
            run_dir = Path(tmp) / f"r{r}"
            run_dir.mkdir()
            return dlforge_round(args, data, run_dir)

        t_ours, t_plain = paired_rounds(ours, lambda r: plain_round(args, x, y, args.steps), args.rounds)
    shape = f"patch {args.patch}, {args.layers} blocks {args.dim} wide, {args.heads} heads, 1x{SIZE}x{SIZE}"
    result = {"benchmark": "vit_step", "model": f"vit, {shape}", "batch_size": args.batch, "rounds": args.rounds,
              "steps_per_round": args.steps, "threads": torch.get_num_threads(),
              **summary(t_ours, t_plain, args.batch)}
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
