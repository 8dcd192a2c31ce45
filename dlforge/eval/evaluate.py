"""Evaluate a model on a dataset: mean loss plus task metrics. Used by the Trainer and by `dlforge eval`."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from dlforge.data.dataset import collate_batch


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, data: Dataset, metrics: Any = None, batch_size: int = 256,
                   device: torch.device | str = "cpu", autocast_dtype: torch.dtype | None = None,
                   channels_last: bool = False) -> dict[str, float]:
    """{"loss": mean per-sample loss, **metrics.compute()} over `data`, in order, without touching any RNG."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    if metrics is not None:
        metrics.reset()
    loss_sum, count = 0.0, 0
    for batch in DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate_batch):
        batch = {k: v.to(device) for k, v in batch.items()}
        if channels_last:
            batch = {k: v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v for k, v in batch.items()}
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model(batch)
        n = len(next(iter(batch.values())))
        if out.loss is not None:
            loss_sum, count = loss_sum + out.loss.float().item() * n, count + n
        if metrics is not None:
            metrics.update(out, batch)
    model.train(was_training)
    results = {"loss": loss_sum / count} if count else {}
    if metrics is not None:
        results.update(metrics.compute())
    return results
