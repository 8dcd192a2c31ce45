"""Evaluate a model on a dataset: mean loss plus task metrics. Used by the Trainer and by `dlforge eval`."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from dlforge.data.dataset import DataBundle, collate_batch


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


def first_batches(data: Dataset, limit: int | float | None, batch_size: int) -> Dataset:
    """What `train.limit_eval_batches` keeps of `data`: its first `limit` batches of `batch_size` samples (an int),
    or its first `limit` fraction of samples (a float, rounded up); all of it when `limit` is None."""
    if limit is None:
        return data
    keep = limit * batch_size if isinstance(limit, int) else math.ceil(limit * len(data))
    return Subset(data, range(keep)) if keep < len(data) else data


def limit_splits(data: DataBundle, limit: int | float | None, batch_size: int) -> tuple[DataBundle, dict[str, Any]]:
    """The bundle with each split cut to its `first_batches`, and what was kept: {"limit_eval_batches": limit,
    "samples": {split: [evaluated, of]}}; {} when `limit` is None or cut nothing."""
    if limit is None:
        return data, {}
    parts = {name: getattr(data, name) for name in ("train", "val", "test", "eval_train")}
    limited = dataclasses.replace(data, **{name: None if ds is None else first_batches(ds, limit, batch_size)
                                           for name, ds in parts.items()})
    samples = {split: [len(limited.split(split, evaluation=True)), len(data.split(split, evaluation=True))]
               for split in ("train", "val", "test") if data.split(split, evaluation=True) is not None}
    if all(n == total for n, total in samples.values()):
        return data, {}
    return limited, {"limit_eval_batches": limit, "samples": samples}
