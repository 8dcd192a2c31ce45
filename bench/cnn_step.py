"""CNN training throughput: dlforge's ResNet-18-layout model through the Trainer against the same architecture
written as a plain PyTorch module and trained by a plain loop.

Both sides: ResNet-18 layout (BasicBlock, [2, 2, 2, 2]) with the small-image stem (3x3, stride 1, no max pool), first
stage `--width` channels, 1x28x28 inputs (Fashion-MNIST's shape), 10 classes, SGD with momentum, batch `--batch`,
channels-last memory format (as the fashion presets train). The dlforge side runs as `dlforge train` would: the
Trainer with its JSONL metrics logger. Paired, interleaved rounds; prints the median samples/s ratio dlforge/plain
(1.00 = as fast as plain PyTorch; target >= 0.97) with its min and max.

    python bench/cnn_step.py [--rounds 10] [--steps 12] [--width 32] [--batch 64] [--json]
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

N, CLASSES = 4096, 10


# --- the baseline: ResNet-18 as anyone would write it in plain PyTorch ----------------------------------------------


class PlainBasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PlainResNet18(nn.Module):
    def __init__(self, width: int, in_channels: int = 1, classes: int = CLASSES):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        layers, cin = [], width
        for i, n in enumerate([2, 2, 2, 2]):
            cout = width * 2**i
            for j in range(n):
                layers.append(PlainBasicBlock(cin, cout, 2 if (j == 0 and i > 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1))


# --- one round of each --------------------------------------------------------------------------------------------


def dlforge_round(width: int, data: TensorDictDataset, batch: int, steps: int, run_dir: Path) -> float:
    torch.manual_seed(0)
    model = create_model("resnet18", width=width, in_channels=1, image_size=28, num_classes=CLASSES, stem="cifar")
    cfg = TrainConfig(max_steps=steps, batch_size=batch, optimizer="sgd", lr=0.05, momentum=0.9, log_every=10,
                      checkpoint_every=None, progress=False, tensorboard=False, device="cpu", channels_last=True)
    clock = StepClock()
    Trainer(model, cfg, data, callbacks=[MetricsLogger(run_dir, tensorboard=False), clock]).fit()
    return per_step(clock.times)


def plain_round(width: int, x: torch.Tensor, y: torch.Tensor, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    model = PlainResNet18(width).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()

    def step(idx: torch.Tensor) -> None:
        xb = x[idx].contiguous(memory_format=torch.channels_last)
        F.cross_entropy(model(xb), y[idx]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return hand_loop(step, len(x), batch, steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(N, 1, 28, 28, generator=g), torch.randint(0, CLASSES, (N,), generator=g)
    data = TensorDictDataset({"x": x, "y": y})
    with tempfile.TemporaryDirectory() as tmp:
        plain_round(args.width, x, y, args.batch, 3)  # warm up allocator and kernels

        def ours(r: int) -> float:
            run_dir = Path(tmp) / f"r{r}"
            run_dir.mkdir()
            return dlforge_round(args.width, data, args.batch, args.steps, run_dir)

        t_ours, t_plain = paired_rounds(ours, lambda r: plain_round(args.width, x, y, args.batch, args.steps),
                                        args.rounds)
    result = {"benchmark": "cnn_step", "model": f"resnet18 layout, width {args.width}, 1x28x28",
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
