"""What every dataset builder returns, and the in-memory dataset that tabular data uses.

Batches are dicts of tensors with the conventional names (`x`, `y`, `input_ids`, `pixel_values`, ...). A dataset
may implement `__getitems__(indices)` to return a whole batch at once; the DataLoader then calls it instead of
indexing sample by sample, which is what keeps small-model training fast.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset


class TensorDictDataset(Dataset):
    """Rows of equally long tensors; `ds[i]` is one sample, `ds.__getitems__(idx)` one batch."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        lengths = {len(t) for t in tensors.values()}
        if len(lengths) != 1:
            raise ValueError(f"tensors of different lengths: { {k: len(t) for k, t in tensors.items()} }")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: t[i] for k, t in self.tensors.items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {k: t[idx] for k, t in self.tensors.items()}


def collate_batch(batch: Any) -> dict[str, torch.Tensor]:
    """Collate for datasets with `__getitems__` (already a batch dict) or plain per-sample dicts."""
    if isinstance(batch, dict):
        return batch
    return torch.utils.data.default_collate(batch)


def sample_lengths(data: Dataset) -> torch.Tensor | None:
    """The length of every sample, (N,), for datasets that know them (a `lengths` attribute, e.g. tokens per
    sentence pair), seen through `Subset`s; None for the others."""
    if isinstance(data, torch.utils.data.Subset):
        inner = sample_lengths(data.dataset)
        return None if inner is None else inner[torch.as_tensor(data.indices, dtype=torch.long)]
    lengths = getattr(data, "lengths", None)
    return torch.as_tensor(lengths) if lengths is not None else None


@dataclass
class DataBundle:
    """Splits plus what the rest of dlforge needs to know about them.

    info: {"task": "classification" | "regression", "num_classes": int | None, "label_names": list | None, ...}
    model_defaults: config values the model must take from the data (e.g. in_features, out_features).
    preprocessing: JSON-able state saved in the model folder so `predict` can prepare new inputs the same way.
    fingerprint: a hash of the data, recorded in the run registry.
    augment: an optional module the Trainer applies to every training batch on the training device (after moving
        it there), e.g. `BatchAugment` for images; it draws from torch's global RNG, so a resume replays it exactly.
    tokenizer: the tokenizer of text data (`dlforge.text.tokenizer`); the run's model folder gets its tokenizer.json
        and tokenizer_config.json, and preprocessing.json its hash (`tokenizer_hash`).
    eval_train: what stands for the training split when it is evaluated, when `train` is not fit for that (e.g.
        language-model windows starting at every token: evaluated on non-overlapping windows instead).
    """

    train: Dataset
    val: Dataset | None
    test: Dataset | None
    info: dict[str, Any] = field(default_factory=dict)
    model_defaults: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    augment: torch.nn.Module | None = None
    tokenizer: Any = None
    eval_train: Dataset | None = None

    def split(self, name: str, evaluation: bool = False) -> Dataset | None:
        """The dataset of split `name`; with `evaluation`, `eval_train` for the training split when there is one."""
        if evaluation and name == "train" and self.eval_train is not None:
            return self.eval_train
        return getattr(self, name)


def build_data(cfg: Any) -> DataBundle:
    """The DataBundle of a `Config`'s data section (its registered dataset), cut to `data.limit` samples a split."""
    from dlforge.registry import dataset_entry

    dcfg = cfg.data_config()
    data = dataset_entry(cfg.data["name"]).fn(dcfg)
    if dcfg.limit is not None:  # the first N of each split: a smoke run over real data, in seconds
        for split in ("train", "val", "test", "eval_train"):
            ds = getattr(data, split)
            if ds is not None and len(ds) > dcfg.limit:
                setattr(data, split, torch.utils.data.Subset(ds, range(dcfg.limit)))
    return data


def default_cache_dir() -> Path:
    """Where datasets that are generated or prepared once are cached unless their config names a folder."""
    return Path.home() / ".cache" / "dlforge" / "datasets"


def fingerprint_tensors(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
