"""The step-batch sampler's length-grouped order (train.group_by_length)."""

from __future__ import annotations

import pytest
import torch

from dlforge.config import TrainConfig
from dlforge.data.dataset import TensorDictDataset, sample_lengths
from dlforge.errors import ConfigError
from dlforge.registry import create_model
from dlforge.train.sampler import StepBatchSampler
from dlforge.train.trainer import Trainer


def padded_tokens(batches: list[list[int]], lengths: torch.Tensor) -> int:
    return sum(len(b) * int(lengths[b].max()) for b in batches)


def test_grouped_batches_cover_every_sample_once_with_less_padding():
    lengths = torch.randint(1, 60, (1003,), generator=torch.Generator().manual_seed(0))
    plain = StepBatchSampler(1003, 8, seed=1)
    grouped = StepBatchSampler(1003, 8, seed=1, lengths=lengths)
    batches = list(grouped)
    assert sorted(i for b in batches for i in b) == list(range(1003))
    assert [len(b) for b in batches][-1] == 3 and all(len(b) == 8 for b in batches[:-1])  # the short one is last
    assert padded_tokens(batches, lengths) < 0.75 * padded_tokens(list(plain), lengths)
    assert list(StepBatchSampler(1003, 8, seed=1, lengths=lengths)) == batches  # a pure function of seed and epoch
    grouped.set_epoch(1)
    assert list(grouped) != batches
    grouped.set_epoch(0, start=40)  # a resume mid-epoch continues with the same batches
    assert list(grouped) == batches[40:]


def test_the_trainer_groups_by_length_only_for_data_that_knows_lengths(train_config, blobs):
    class WithLengths(TensorDictDataset):
        lengths = torch.arange(64) % 7

    model = create_model("mlp", in_features=4, out_features=3, hidden=[8])
    data = WithLengths(blobs(64).tensors)
    sub = torch.utils.data.Subset(data, range(10, 30))
    torch.testing.assert_close(sample_lengths(sub), torch.arange(10, 30) % 7)
    trainer = Trainer(model, train_config(max_steps=2, batch_size=8, group_by_length=True), sub)
    assert trainer.sampler.lengths is not None
    with pytest.raises(ConfigError, match="group_by_length"):
        Trainer(model, TrainConfig(max_steps=2, group_by_length=True), blobs(64))
