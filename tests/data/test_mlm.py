"""Masked-LM data: BERT's masking statistics over many batches, the re-masking batch transform and exact resume,
segment packing, and the text-file and Shakespeare masked-LM data sets."""

from __future__ import annotations

import copy

import pytest
import torch

from dlforge.config import load_config
from dlforge.data.masked_lm import MaskedLMConfig, MaskTokens, mask_tokens, normal_ids, pack_lines, text_files_mlm
from dlforge.errors import ConfigError
from dlforge.registry import create_model
from dlforge.train.trainer import Trainer

VOCAB, SPECIAL = 50, (0, 1, 2, 3, 4)  # [PAD] [UNK] [CLS] [SEP] [MASK], as the tokenizer orders them
PAD, CLS, SEP, MASK = 0, 2, 3, 4


def segments(n: int, length: int = 40, seed: int = 0) -> torch.Tensor:
    """n rows of [CLS] w... [SEP] [PAD]... with 10..length-2 random normal tokens each."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((n, length), PAD)
    for i in range(n):
        k = int(torch.randint(10, length - 1, (1,), generator=g))
        ids[i, 0], ids[i, 1:k + 1], ids[i, k + 1] = CLS, torch.randint(5, VOCAB, (k,), generator=g), SEP
    return ids


def test_masking_statistics_over_many_batches():
    random_ids = normal_ids(SPECIAL, VOCAB)
    special_ids = torch.tensor(SPECIAL)
    g = torch.Generator().manual_seed(0)
    counts = {"chosen": 0, "mask": 0, "random": 0, "kept": 0}
    replaced_with = torch.zeros(VOCAB)
    for b in range(50):
        ids = segments(64, seed=b)
        special = torch.isin(ids, special_ids)
        out, labels = mask_tokens(ids, special, MASK, random_ids, 0.15, generator=g)
        chosen = labels != -100
        # exactly round(15%) of each row's non-special tokens, at least one, and never a special token
        expected = ((~special).sum(1) * 0.15).round().clamp(min=1)
        assert torch.equal(chosen.sum(1), expected.long())
        assert not (chosen & special).any()
        assert torch.equal(labels[chosen], ids[chosen])  # the label is the original token
        assert torch.equal(out[~chosen], ids[~chosen])  # nothing else changes
        is_mask = chosen & (out == MASK)
        kept = chosen & (out == ids)
        rand = chosen & ~is_mask & ~kept
        counts["chosen"] += int(chosen.sum())
        counts["mask"] += int(is_mask.sum())
        counts["kept"] += int(kept.sum())
        counts["random"] += int(rand.sum())
        assert not torch.isin(out[rand], special_ids).any()  # random replacements are ordinary tokens
        replaced_with += torch.bincount(out[rand], minlength=VOCAB)
    n = counts["chosen"]
    assert n > 10_000
    # a random token equal to the original counts as kept: 10% + 10% / 45 normal tokens
    assert counts["mask"] / n == pytest.approx(0.8, abs=0.015)
    assert counts["random"] / n == pytest.approx(0.1 * 44 / 45, abs=0.01)
    assert counts["kept"] / n == pytest.approx(0.1 + 0.1 / 45, abs=0.01)
    normal = replaced_with[5:]
    assert (normal > 0).all() and normal.max() / normal.min() < 3  # every normal token drawn, about uniformly


def test_masking_is_deterministic_given_the_generator_and_a_row_without_candidates_stays_unmasked():
    ids = segments(8)
    ids[3] = PAD
    ids[3, :2] = torch.tensor([CLS, SEP])  # nothing to mask in this row
    special = torch.isin(ids, torch.tensor(SPECIAL))
    a = mask_tokens(ids, special, MASK, normal_ids(SPECIAL, VOCAB), generator=torch.Generator().manual_seed(5))
    b = mask_tokens(ids, special, MASK, normal_ids(SPECIAL, VOCAB), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert (a[1][3] == -100).all() and torch.equal(a[0][3], ids[3])


def test_mask_tokens_transform_remasks_from_the_original_tokens():
    ids = segments(32)
    special = torch.isin(ids, torch.tensor(SPECIAL))
    masked, labels = mask_tokens(ids, special, MASK, normal_ids(SPECIAL, VOCAB), generator=torch.Generator())
    transform = MaskTokens(SPECIAL, VOCAB, MASK)
    torch.manual_seed(1)
    out = transform({"input_ids": masked, "labels": labels, "attention_mask": (ids != PAD).long()})
    restored = torch.where(out["labels"] != -100, out["labels"], out["input_ids"])
    unchanged = (out["labels"] == -100) | (out["input_ids"] == out["labels"])
    assert torch.equal(restored[unchanged], ids[unchanged])
    assert torch.equal(out["labels"][out["labels"] != -100], ids[out["labels"] != -100])
    assert not torch.equal(out["labels"] != -100, labels != -100)  # other positions chosen this time
    torch.manual_seed(1)
    again = transform({"input_ids": masked, "labels": labels, "attention_mask": (ids != PAD).long()})
    assert torch.equal(again["input_ids"], out["input_ids"])  # global RNG: a restored state replays it


def test_training_with_dynamic_masking_resumes_bit_for_bit(train_config):
    from dlforge.data.dataset import TensorDictDataset

    ids = segments(24, length=16)
    special = torch.isin(ids, torch.tensor(SPECIAL))
    masked, labels = mask_tokens(ids, special, MASK, normal_ids(SPECIAL, VOCAB), generator=torch.Generator())
    data = TensorDictDataset({"input_ids": masked, "attention_mask": (ids != PAD).long(), "labels": labels})

    def trainer(steps: int) -> Trainer:
        torch.manual_seed(0)
        model = create_model("bert_mlm", vocab_size=VOCAB, dim=16, n_layers=1, n_heads=2, ffn_hidden=32, context=16)
        cfg = train_config(max_steps=steps, batch_size=8, lr=1e-3)
        return Trainer(model, cfg, data, batch_transform=MaskTokens(SPECIAL, VOCAB, MASK))

    full = trainer(6)
    full.fit()
    first = trainer(3)
    first.fit()
    state = copy.deepcopy(first.state_dict())
    second = trainer(6)
    second.load_state_dict(state)
    second.fit()
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key


def test_pack_lines_keeps_the_tokens_in_order_within_the_limit():
    lines = [[1] * 3, [2] * 4, [3] * 12, [4] * 2, [5] * 5]
    packed = pack_lines(lines, 8)
    assert all(0 < len(s) <= 8 for s in packed)
    assert [t for s in packed for t in s] == [t for line in lines for t in line]
    assert packed[0] == [1, 1, 1, 2, 2, 2, 2]  # whole lines while they fit
    assert packed[1] == [3] * 8  # a line longer than a segment is cut


def test_text_files_mlm_builds_masked_segments(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"line {i} of the little corpus, with some words" for i in range(200)))
    cfg = MaskedLMConfig(name="text_files_mlm", path=str(corpus), tokenizer="minilm", max_length=32,
                         val_fraction=0.1, test_fraction=0.1)
    data = text_files_mlm(cfg)
    assert data.info["lines"] == {"train": 160, "val": 20, "test": 20}
    t = data.train.tensors
    assert t["input_ids"].shape[1] == 32 and (t["input_ids"][:, 0] == 101).all()  # [CLS] first
    assert (t["labels"] != -100).sum(1).min() >= 1
    again = text_files_mlm(cfg)  # the static masks depend on the seed only
    assert torch.equal(again.train.tensors["input_ids"], t["input_ids"])
    assert isinstance(data.augment, MaskTokens)
    other = text_files_mlm(cfg.model_copy(update={"mask_seed": 1}))
    assert not torch.equal(other.train.tensors["labels"], t["labels"])


def test_masked_lm_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.path: required"):
        load_config({"data": {"name": "text_files_mlm"}, "model": {"name": "bert_mlm"}, "train": {"max_steps": 1}})
    with pytest.raises(ConfigError, match=r"data\.mask_prob"):
        load_config({"data": {"name": "shakespeare_mlm", "mask_prob": 1.5}, "model": {"name": "bert_mlm"},
                     "train": {"max_steps": 1}})


def test_shakespeare_mlm_holds_out_the_genre_plays():
    from dlforge.data.genre import GenreConfig
    from dlforge.data.plays import genre_split, play_genres, plays_by_genre_split

    split = plays_by_genre_split()
    genre = genre_split(play_genres(GenreConfig(name="shakespeare_genre").genres))
    assert split["val"] == genre["val"] and split["test"] == genre["test"]
    assert not set(split["train"]) & (set(genre["val"]) | set(genre["test"]))
    assert len(split["train"]) + len(split["val"]) + len(split["test"]) == 38  # every play, once
