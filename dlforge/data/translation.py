"""Parallel sentences for translation: English -> Spanish on the verse-aligned King James and Reina-Valera 1909.

    data: {name: bible_translation, source: engKJV2006eb, target: spaRV1909eb, max_words: 20, tokenizer: bpe:8000}

`bible_translation` reads two SWORD Bible modules (apt `sword-text-kjv`, `sword-text-sparv`; `dlforge.data.sword`)
and keeps the verses both have with at most `max_words` words on each side. Validation and test sets are whole
books, never single verses, so that no chapter is half trained on and half judged: by default the books the project
holds out of every Bible corpus (`dlforge.data.sword.HELD_OUT_BOOKS`): Joshua, Ezra, Lamentations and Mark for
validation, Judges, Hosea, John and Ephesians for test (`val_books` / `test_books`, OSIS names such as `1Cor`).
Every other book trains. A chapter's opening word, which the Reina-Valera sets in capitals, is put in sentence case.

The tokenizer (`dlforge.text.tokenizer`; byte-level BPE by default) is trained on the training books only: one for
both languages (`shared_vocab`, the model then shares one embedding matrix), or one per language. It needs an
end-of-text token (EOS), which also starts the decoder input when it has no BOS token, as in fairseq. The target
tokenizer travels in the model folder (tokenizer.json); a separate source tokenizer in preprocessing.json.

A sample is a pair of token lists; a batch (`PairDataset.__getitems__`) pads them to the longest in the batch:

    input_ids, attention_mask   (B, S)   source tokens + EOS; 1 on real tokens, 0 on padding
    decoder_input_ids           (B, T)   BOS + target tokens (teacher forcing)
    labels                      (B, T)   target tokens + EOS, -100 on padding
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import Field, model_validator
from torch.utils.data import Dataset, Subset

from dlforge.config import DataConfig
from dlforge.data.dataset import DataBundle, fingerprint_tensors
from dlforge.data.sword import HELD_OUT_BOOKS, aligned_verses, word_count
from dlforge.errors import ConfigError, DataError, DlforgeError
from dlforge.registry import register_dataset
from dlforge.text.tokenizer import Tokenizer, TokenizerSpec, model_tokenizer, resolve_tokenizer, tokenizer_from_dict

SPLITS = ("train", "val", "test")


class BibleTranslationConfig(DataConfig):
    """Verse pairs of two SWORD Bibles, split by book, subword-tokenized."""

    source: str = Field("engKJV2006eb", description="SWORD module of the source language")
    target: str = Field("spaRV1909eb", description="SWORD module of the target language")
    max_words: int | None = Field(20, ge=1, description="keep verses of at most this many words on both sides")
    val_books: list[str] = Field(default_factory=lambda: list(HELD_OUT_BOOKS["val"]),
                                 description="books of the validation split (OSIS names)")
    test_books: list[str] = Field(default_factory=lambda: list(HELD_OUT_BOOKS["test"]),
                                  description="books of the test split (OSIS names)")
    tokenizer: TokenizerSpec = Field(default_factory=lambda: TokenizerSpec(type="bpe", vocab_size=8000),
                                     description="bpe:N, wordpiece:N, char, a tokenizer folder, or {type: ..., ...}")
    shared_vocab: bool = Field(True, description="one tokenizer and vocabulary for both languages")

    @model_validator(mode="after")
    def _disjoint(self) -> BibleTranslationConfig:
        both = sorted(set(self.val_books) & set(self.test_books))
        if both:
            raise ConfigError(f"data.test_books: {both[0]!r} is in data.val_books too; a book is in one split")
        return self


class PairDataset(Dataset):
    """Tokenized sentence pairs, stored flat; `ds[i]` is one pair, `ds.__getitems__(idx)` a padded batch.

    `sources` and `targets` keep the texts (the references for BLEU)."""

    def __init__(self, source_ids: list[list[int]], target_ids: list[list[int]], sources: list[str],
                 targets: list[str], pad_id: int, bos_id: int, eos_id: int):
        """`source_ids` as `encode_sources` gives them (EOS included); `target_ids` without BOS and EOS, which
        come from the target vocabulary's `bos_id` and `eos_id`."""
        if not len(source_ids) == len(target_ids) == len(sources) == len(targets):
            raise ValueError("sources and targets differ in number")
        self.sources, self.targets = sources, targets
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.source_flat, self.source_start, self.source_len = _flat(source_ids)
        self.target_flat, self.target_start, self.target_len = _flat(target_ids)

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def lengths(self) -> torch.Tensor:
        """(N,) the longer side of each pair in tokens, what a batch is padded to (`train.group_by_length`)."""
        return torch.maximum(self.source_len, self.target_len + 1)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        source, source_mask = _pad(self.source_flat, self.source_start[idx], self.source_len[idx], self.pad_id)
        target, target_mask = _pad(self.target_flat, self.target_start[idx], self.target_len[idx] + 1, self.pad_id)
        ends = self.target_len[idx]  # (B,) where EOS goes in the labels
        labels = target.masked_fill(~target_mask, -100)
        labels[torch.arange(len(idx)), ends] = self.eos_id  # (B, T) target + EOS
        decoder_input_ids = torch.cat([torch.full((len(idx), 1), self.bos_id), target[:, :-1]], dim=1)
        decoder_input_ids = decoder_input_ids.masked_fill(~target_mask, self.pad_id)  # (B, T) BOS + target
        return {"input_ids": source, "attention_mask": source_mask.long(), "decoder_input_ids": decoder_input_ids,
                "labels": labels}


def _flat(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token lists -> one flat tensor, the start of each list in it, and its length."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    starts = torch.cumsum(lengths, 0) - lengths
    flat = torch.tensor([t for s in seqs for t in s], dtype=torch.long)
    return flat, starts, lengths


def _pad(flat: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor, pad_id: int) -> tuple[torch.Tensor,
                                                                                            torch.Tensor]:
    """Rows flat[start : start + length], right-padded to the longest: ids (B, L) and the real-token mask (B, L)."""
    width = int(lengths.max()) if len(lengths) else 0
    pos = torch.arange(width)[None]  # (1, L)
    mask = pos < lengths[:, None]  # (B, L)
    index = (starts[:, None] + pos).clamp(max=max(len(flat) - 1, 0))
    ids = flat[index] if len(flat) else torch.zeros(mask.shape, dtype=torch.long)
    return ids.masked_fill(~mask, pad_id), mask


def encode_sources(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Source token ids as the model reads them: the text's tokens, then the source vocabulary's EOS."""
    return [ids + [tokenizer.eos_id] for ids in tokenizer.encode_batch(texts)]


def pair_texts(ds: Dataset) -> tuple[list[str], list[str]]:
    """The source and target texts of a PairDataset, or of a Subset of one (`data.limit`), in order."""
    if isinstance(ds, Subset):
        sources, targets = pair_texts(ds.dataset)
        return [sources[i] for i in ds.indices], [targets[i] for i in ds.indices]
    if not isinstance(ds, PairDataset):
        raise DataError(f"expected sentence pairs (a translation dataset), got {type(ds).__name__}")
    return ds.sources, ds.targets


# --- the Bible -------------------------------------------------------------------------------------------------


@register_dataset(BibleTranslationConfig)
def bible_translation(config: BibleTranslationConfig) -> DataBundle:
    """Verse pairs of two SWORD Bibles (KJV -> Reina-Valera 1909), split by book."""
    verses = aligned_verses(config.source, config.target)
    books = list(dict.fromkeys(a.book for a, _ in verses))
    for key in ("val_books", "test_books"):
        for book in getattr(config, key):
            if book not in books:
                close = difflib.get_close_matches(book, books, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"books: {', '.join(books)}"
                raise ConfigError(f"data.{key}: no book {book!r} in both modules; {hint}")
    split_of = {**{b: "val" for b in config.val_books}, **{b: "test" for b in config.test_books}}
    pairs = undo_drop_caps([(a.book, a.chapter, a.verse, a.text, b.text) for a, b in verses])
    texts: dict[str, tuple[list[str], list[str]]] = {s: ([], []) for s in SPLITS}
    for book, _, _, src, tgt in pairs:
        if config.max_words is None or max(word_count(src), word_count(tgt)) <= config.max_words:
            texts[split_of.get(book, "train")][0].append(src)
            texts[split_of.get(book, "train")][1].append(tgt)
    if not texts["train"][0]:
        raise DataError(f"{config.source} / {config.target}: no training pairs left (data.max_words, data.*_books)")
    info = {"source_module": config.source, "target_module": config.target,
            "books": {"val": config.val_books, "test": config.test_books,
                      "train": [b for b in books if b not in split_of]}}
    return build_translation(texts, config, source_name=f"{config.source}->{config.target}", extra_info=info)


_WORD = re.compile(r"\w+")


def undo_drop_caps(pairs: list[tuple]) -> list[tuple]:
    """Sentence case for a chapter's opening word set in capitals ("EN el principio" -> "En el principio", "Y LOS
    hijos" -> "Y Los hijos"), as the Reina-Valera prints them; a word found in capitals more often in other verses
    than at chapter openings (KJV's LORD) stays as it is."""
    def fix(texts: list[str], first: list[bool]) -> list[str]:
        opening = []  # the first capitalized word among a chapter's first two words, or None
        for text, opens in zip(texts, first, strict=True):
            words = _WORD.findall(text)[:2] if opens else []
            opening.append(next((w for w in words if len(w) > 1 and w.isupper()), None))
        at_openings = Counter(w for w in opening if w)
        elsewhere = Counter(w for t, opens in zip(texts, first, strict=True) if not opens
                            for w in _WORD.findall(t) if w in at_openings)
        return [t.replace(w, w.capitalize(), 1) if w and elsewhere[w] <= at_openings[w] else t
                for t, w in zip(texts, opening, strict=True)]

    first = [p[2] == 1 for p in pairs]
    sources, targets = fix([p[3] for p in pairs], first), fix([p[4] for p in pairs], first)
    return [(*p[:3], s, t) for p, s, t in zip(pairs, sources, targets, strict=True)]


def build_translation(texts: dict[str, tuple[list[str], list[str]]], config: BibleTranslationConfig,
                      source_name: str, extra_info: dict[str, Any] | None = None) -> DataBundle:
    """Split texts -> tokenizer(s) trained on the training pairs -> PairDatasets, info, preprocessing."""
    train_src, train_tgt = texts["train"]
    if config.shared_vocab:
        source_tok = target_tok = resolve_tokenizer(config.tokenizer, lambda: train_src + train_tgt)
    else:
        source_tok = resolve_tokenizer(config.tokenizer, lambda: train_src)
        target_tok = resolve_tokenizer(config.tokenizer, lambda: train_tgt)
    for side, tok in (("source", source_tok), ("target", target_tok)):
        if tok.eos_id is None:
            raise ConfigError(f"data.tokenizer: the {side} tokenizer ({config.tokenizer.describe()}) has no "
                              "end-of-text token; give it one, e.g. special_tokens: [</s>]")
    special = special_ids(target_tok)
    datasets: dict[str, PairDataset | None] = {}
    encoded = []
    for split in SPLITS:
        src, tgt = texts[split]
        if not src:
            datasets[split] = None
            continue
        datasets[split] = PairDataset(encode_sources(source_tok, src), target_tok.encode_batch(tgt), src, tgt,
                                      **special)
        encoded += [datasets[split].source_flat, datasets[split].target_flat]
    info: dict[str, Any] = {
        "task": "translation", "num_classes": None, "label_names": None, "source": source_name,
        "vocab_size": source_tok.vocab_size, "target_vocab_size": target_tok.vocab_size,
        "shared_vocab": config.shared_vocab, "max_words": config.max_words, "tokenizer_type": target_tok.type,
        **{f"n_{split}": len(datasets[split]) if datasets[split] is not None else 0 for split in SPLITS},
        **(extra_info or {}),
    }  # fmt: skip
    preprocessing = {"kind": "translation", "shared_vocab": config.shared_vocab,
                     "source_tokenizer": None if config.shared_vocab else source_tok.to_dict()}
    model_defaults = {"vocab_size": source_tok.vocab_size,
                      "target_vocab_size": None if config.shared_vocab else target_tok.vocab_size,
                      "bos_id": special["bos_id"], "eos_id": special["eos_id"]}
    return DataBundle(datasets["train"], datasets["val"], datasets["test"], info=info, model_defaults=model_defaults,
                      preprocessing=preprocessing, fingerprint=fingerprint_tensors(*encoded), tokenizer=target_tok)


def special_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """pad, bos and eos ids of a target tokenizer: BOS and padding fall back to EOS when it has none."""
    eos = tokenizer.eos_id
    return {"pad_id": eos if tokenizer.pad_id is None else tokenizer.pad_id,
            "bos_id": eos if tokenizer.bos_id is None else tokenizer.bos_id, "eos_id": eos}


def translation_tokenizers(meta: dict[str, Any], where: str) -> tuple[Tokenizer, Tokenizer]:
    """(source tokenizer, target tokenizer) of a translation model folder (`load_model`'s meta): the target one is
    the folder's tokenizer (hash checked); the source one is the same, or the one kept in preprocessing.json."""
    pre = (meta.get("extra") or {}).get("preprocessing.json") or {}
    if pre.get("kind") != "translation":
        raise DlforgeError(f"{where}: not a translation model (expected a run of an encoder-decoder such as "
                           "transformer_seq2seq on bible_translation)")
    target = model_tokenizer(meta, where)
    source = pre.get("source_tokenizer")
    return (target if source is None else tokenizer_from_dict(source, f"{where}: preprocessing.json")), target
