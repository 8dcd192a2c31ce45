"""Inference latency: a model's ONNX export in onnxruntime (fp32, CPUExecutionProvider) against the same model in
PyTorch eager (eval mode, `torch.inference_mode`), at batch 1 and batch 64.

Models, as their presets build them (random weights: latency does not depend on their values): the Fashion-MNIST
ResNet-20 (`fashion-resnet`, 1x28x28 images), MiniLM-L6 (`genre-minilm`'s encoder with its mean-pooled head, 128 tokens
a text) and the char GPT (`gpt-shakespeare-char`, 65 characters, its 128-token context). Each is exported by
`dlforge.deploy.onnx_export.export_onnx` (checked against PyTorch within 1e-4 first). Both runtimes use this
machine's cores (torch's threads, onnxruntime's default intra-op pool). Paired, interleaved rounds; prints per model
and batch the median latency of each and the median ratio PyTorch time / onnxruntime time (above 1: onnxruntime is
faster; target >= 1) with its min and max.

    python bench/onnx_latency.py [--rounds 10] [--calls 5] [--models resnet20,minilm,gpt] [--batches 1,64] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from dlforge.config import load_config
from dlforge.deploy.onnx_export import export_onnx, ort_session, require_onnx
from dlforge.registry import create_model

sys.path.insert(0, str(Path(__file__).parent))
from paired import paired_rounds  # noqa: E402

MODELS = {  # name -> (preset, the sizes its data would set, inputs of a batch)
    "resnet20": ("fashion-resnet", {"in_channels": 1, "num_classes": 10, "image_size": 28}),
    "minilm": ("genre-minilm", {"num_classes": 5}),
    "gpt": ("gpt-shakespeare-char", {"vocab_size": 65}),
}
TOKENS = 128


def build(name: str) -> torch.nn.Module:
    preset, sizes = MODELS[name]
    options = {k: v for k, v in load_config(preset).model.items() if k != "name"}
    torch.manual_seed(0)
    return create_model(load_config(preset).model["name"], **{**options, **sizes}).eval()


def inputs(name: str, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if name == "resnet20":
        return {"x": torch.rand(batch, 1, 28, 28, generator=g)}
    vocab = 65 if name == "gpt" else 30522
    ids = torch.randint(0, vocab, (batch, TOKENS), generator=g)
    return {"input_ids": ids} if name == "gpt" else {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def signature(name: str, example: dict[str, torch.Tensor]) -> dict:
    varying = {1} if name == "gpt" else set()
    return {"task": name, "inputs": [{"name": k, "dtype": str(v.dtype), "shape": [-1, *[
        -1 if i + 1 in varying else n for i, n in enumerate(v.shape[1:])]]} for k, v in example.items()],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1]}]}


def timer(fn, calls: int):
    def run(_round: int) -> float:
        fn()  # warm: onnxruntime's first call at a new shape plans its memory
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - start) / calls
    return run


def bench(name: str, batches: list[int], rounds: int, calls: int, folder: Path) -> dict:
    require_onnx()
    model = build(name)
    example = inputs(name, 2)
    export_onnx(model, signature(name, example), [example, inputs(name, 5, 1)], folder / name)
    session = ort_session(folder / name / "model.onnx")
    results = {}
    for batch in batches:
        x = inputs(name, batch, 2)
        feeds = {k: v.numpy() for k, v in x.items()}

        def eager(x=x):
            with torch.inference_mode():
                model(x)

        def onnx(feeds=feeds):
            session.run(["logits"], feeds)

        t_onnx, t_torch = paired_rounds(timer(onnx, calls), timer(eager, calls), rounds)
        ratios = [t / o for o, t in zip(t_onnx, t_torch, strict=True)]
        results[f"batch {batch}"] = {"torch_ms": 1000 * statistics.median(t_torch),
                                     "onnxruntime_ms": 1000 * statistics.median(t_onnx),
                                     "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
                                     "ratio_max": max(ratios), "rounds": rounds}
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--calls", type=int, default=5, help="calls timed per round and side")
    p.add_argument("--models", default="resnet20,minilm,gpt")
    p.add_argument("--batches", default="1,64")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    out = {"threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as d:
        for name in args.models.split(","):
            out[name] = bench(name, batches, args.rounds, args.calls, Path(d))
            if not args.json:
                for batch, r in out[name].items():
                    print(f"{name} {batch}: torch {r['torch_ms']:.2f} ms, onnxruntime {r['onnxruntime_ms']:.2f} ms; "
                          f"ratio {r['ratio_median']:.3f} (min {r['ratio_min']:.3f}, max {r['ratio_max']:.3f})",
                          flush=True)
    if args.json:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
