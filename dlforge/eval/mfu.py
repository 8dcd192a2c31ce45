"""Model-FLOPs utilization: the FLOPs a model's training needs per second, over what the hardware's matmuls reach.

    peak = matmul_peak(torch.device("cuda"), torch.bfloat16)       # FLOP/s, measured here and now
    mfu(model.flops_per_token(), tokens_per_s, peak)              # 0.0 .. 1.0

MFU counts the model's FLOPs (6 N + 12 L T C per token for a Transformer; PaLM, Chowdhery et al. 2022, appendix B),
not the FLOPs the implementation happens to execute, so recomputation or padding do not inflate it. The peak is
measured, not read from a datasheet: a large square matmul in the training dtype, repeated, on the same device,
which is what dense layers can reach at best here (on a shared CPU, whatever the other processes leave).
"""

from __future__ import annotations

import time

import torch


def matmul_peak(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, size: int | None = None,
                seconds: float = 0.5) -> float:
    """FLOP/s of repeated (size x size) @ (size x size) matmuls in `dtype` on `device`, the best of a few timings."""
    device = torch.device(device)
    size = size or (8192 if device.type == "cuda" else 1024)
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=g).to(device, dtype)
    b = torch.randn(size, size, generator=g).to(device, dtype)
    flops = 2 * size**3

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.inference_mode():
        a @ b  # warm up (kernel selection, caches)
        sync()
        t = time.perf_counter()
        a @ b
        sync()
        reps = max(1, int(seconds / 4 / max(time.perf_counter() - t, 1e-6)))
        best = float("inf")
        for _ in range(4):
            t = time.perf_counter()
            for _ in range(reps):
                a @ b
            sync()
            best = min(best, (time.perf_counter() - t) / reps)
    return flops / best


def mfu(flops_per_token: float, tokens_per_s: float, peak_flops: float) -> float:
    """The share of `peak_flops` (FLOP/s) that `tokens_per_s` at `flops_per_token` amounts to."""
    return flops_per_token * tokens_per_s / peak_flops
