"""The data order: a resumable, shardable batch sampler.

Epoch e visits the training set in the order `randperm(n)` drawn from a generator seeded with (seed, e), cut into
step batches of `step_size` samples (micro-batch size x gradient accumulation). Under DDP each rank takes every
world_size-th index of each step batch, so N processes see exactly the samples one process would. Because the order
is a pure function of (seed, epoch), resuming needs only (epoch, position in the epoch).

With `lengths` (one per sample: tokens, say), step batches group samples of similar length, so that padding to the
longest in a batch wastes little: the shuffled order is cut into pools of `GROUP` step batches, each pool is sorted
by length, cut into step batches, and the full step batches of the epoch are shuffled (the way fairseq and Hugging
Face's `group_by_length` do it). That order is still a pure function of (seed, epoch).
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler

GROUP = 50  # step batches per length-sorted pool


class StepBatchSampler(Sampler[list[int]]):
    def __init__(self, n: int, step_size: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1,
                 lengths: torch.Tensor | None = None):
        if step_size < world_size:
            raise ValueError(f"a step batch of {step_size} samples cannot be shared by {world_size} processes")
        if lengths is not None and len(lengths) != n:
            raise ValueError(f"{len(lengths)} lengths for {n} samples")
        self.n, self.step_size, self.seed, self.shuffle = n, step_size, seed, shuffle
        self.lengths = lengths
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Visit epoch `epoch`, skipping its first `start` step batches (they were trained before a resume)."""
        self.epoch, self.start = epoch, start

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(self.n, generator=g)
        if self.lengths is None:
            return order
        pools = [pool[torch.argsort(self.lengths[pool], descending=True, stable=True)]
                 for pool in order.split(self.step_size * GROUP)]
        batches = list(torch.cat(pools).split(self.step_size))
        full = len(batches) - (len(batches[-1]) < self.step_size)  # a short last batch stays last
        shuffled = [batches[i] for i in torch.randperm(full, generator=g).tolist()] + batches[full:]
        return torch.cat(shuffled)

    @property
    def batches_per_epoch(self) -> int:
        full, rest = divmod(self.n, self.step_size)
        # a last step batch smaller than the world cannot be shared: every rank drops it alike
        return full + (1 if rest >= self.world_size else 0)

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start

    def __iter__(self):
        order = self.order(self.epoch)
        for b in range(self.start, self.batches_per_epoch):
            batch = order[b * self.step_size:(b + 1) * self.step_size]
            yield batch[self.rank::self.world_size].tolist()

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "start": self.start}
