"""Token windows for language models: a corpus tokenized in memory (`lm_text`) or prepared token shards
(`token_shards`).

    data: {name: lm_text, corpus: shakespeare, tokenizer: bpe:4096, context: 256}
    data: {name: lm_text, corpus: my_texts/, tokenizer: {path: tokenizers/bpe8k}, context: 128}
    data: {name: token_shards, path: shards/shakespeare-bpe, context: 256}

`lm_text` reads a corpus (`dlforge.data.corpus`: shakespeare, bible_web, bible_kjv, bible_rv1909, or a path),
trains the tokenizer on its training split (or loads it), and tokenizes every split: each document's ids followed
by the separator (the tokenizer's end-of-text token; a blank line for tokenizers without one). `token_shards` reads
what `dlforge lm prepare` wrote (`dlforge.llm.prepare`): the same token streams as raw uint16 (vocabulary of at most
65,536) or uint32 files, nanoGPT's format, checked against meta.json and the folder's manifest, and memory-mapped.

Samples are `input_ids` (context,) and `labels` (context,), the next token at each position. Training windows start
at every `stride`-th token (default: every token), so the training set has about tokens / stride samples and the
Trainer's sampler draws them in a fresh order each epoch from (seed, epoch): random windows without replacement,
resumed exactly. Validation and test windows are fixed and non-overlapping, and so is the training split when it is
evaluated (`DataBundle.eval_train`). Metrics know each split's characters per token, so bits per character stay
honest for subword tokenizers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import Dataset

from dlforge.config import DataConfig
from dlforge.data.corpus import DOC_SEPARATOR, SPLITS, Corpus, load_corpus
from dlforge.data.dataset import DataBundle
from dlforge.errors import DataError
from dlforge.registry import register_dataset
from dlforge.text.tokenizer import Tokenizer, TokenizerSpec, load_tokenizer, resolve_tokenizer

SHARD_FORMAT = "dlforge-token-shards"
META_FILE = "meta.json"


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocabulary <= 65,536), else uint32; little-endian, as nanoGPT's .bin files."""
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


def separator_ids(tok: Tokenizer) -> list[int]:
    """What follows every document: the end-of-text token, else [SEP], else a blank line's ids."""
    for token_id in (tok.eos_id, tok.sep_id):
        if token_id is not None:
            return [token_id]
    return tok.encode(DOC_SEPARATOR)


def tokenize_documents(tok: Tokenizer, docs: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """The token stream of `docs` (each followed by the separator) and its counts: tokens, documents, chars
    (document characters, plus the separator's when it is text) and chars_per_token."""
    sep = separator_ids(tok)
    ids = tok.encode_batch(docs)
    out = np.empty(sum(len(i) for i in ids) + len(sep) * len(docs), dtype=token_dtype(tok.vocab_size))
    pos = 0
    for doc in ids:
        out[pos:pos + len(doc)] = doc
        out[pos + len(doc):pos + len(doc) + len(sep)] = sep
        pos += len(doc) + len(sep)
    sep_chars = 0 if sep in ([tok.eos_id], [tok.sep_id]) else len(DOC_SEPARATOR)
    chars = sum(len(d) for d in docs) + sep_chars * len(docs)
    counts = {"tokens": len(out), "documents": len(docs), "chars": chars,
              "chars_per_token": chars / len(out) if len(out) else None}
    return out, counts


class TokenWindows(Dataset):
    """Windows of `context` + 1 tokens of one token stream: sample i starts at token i * stride.

    `tokens` is an array, or a (path, dtype, length) triple opened as a read-only memmap in each process.
    """

    def __init__(self, tokens: np.ndarray | tuple[Path, np.dtype, int], context: int, stride: int):
        self.context, self.stride = context, stride
        self._source = tokens
        self._tokens = tokens if isinstance(tokens, np.ndarray) else None
        self.n_tokens = len(tokens) if isinstance(tokens, np.ndarray) else tokens[2]

    @property
    def tokens(self) -> np.ndarray:
        if self._tokens is None:
            path, dtype, length = self._source
            self._tokens = np.memmap(path, dtype=dtype, mode="r", shape=(length,))
        return self._tokens

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers open their own memmap
        state = dict(self.__dict__)
        if not isinstance(self._source, np.ndarray):
            state["_tokens"] = None
        return state

    def __len__(self) -> int:
        return max((self.n_tokens - self.context - 1) // self.stride + 1, 0)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"window index out of range 0..{len(self) - 1}")
        offsets = idx[:, None] * self.stride + np.arange(self.context + 1)  # (B, context + 1)
        window = torch.from_numpy(self.tokens[offsets].astype(np.int64))
        return {"input_ids": window[:, :-1].contiguous(), "labels": window[:, 1:].contiguous()}  # (B, context) each

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


# --- the registered data sets ----------------------------------------------------------------------------------


class _WindowConfig(DataConfig):
    context: int = Field(256, ge=1, description="tokens per sample")
    stride: int = Field(1, ge=1, description="tokens between the starts of training windows (1: every token)")


class LMTextConfig(_WindowConfig):
    """A corpus tokenized in memory: token windows with next-token labels."""

    corpus: str = Field(description="shakespeare, bible_web, bible_kjv, bible_rv1909, or a text file / folder")
    tokenizer: TokenizerSpec = Field(default_factory=lambda: TokenizerSpec(type="char"),
                                     description="char, bpe:N, wordpiece:N, a tokenizer folder, or {type: ..., ...}")
    text_field: str = Field("text", description="the field of each .jsonl record holding its text")
    val_fraction: float = Field(0.05, ge=0, lt=0.5, description="a file / folder: share of characters for validation")
    test_fraction: float = Field(0.05, ge=0, lt=0.5, description="a file / folder: share of characters for test")


class TokenShardsConfig(_WindowConfig):
    """Token shards written by `dlforge lm prepare`."""

    path: str = Field(description="the folder `dlforge lm prepare` wrote")
    verify: bool = Field(True, description="check every file's sha256 against the folder's manifest")


@register_dataset(LMTextConfig)
def lm_text(config: LMTextConfig) -> DataBundle:
    """A text corpus (built-in name or path) as token windows, tokenizer trained on its training split or loaded."""
    corpus = load_corpus(config.corpus, config.text_field, config.val_fraction, config.test_fraction)
    spec = config.tokenizer

    def texts() -> list[str]:  # a character vocabulary must hold the blank line that separates documents
        return corpus.documents("train") + ([DOC_SEPARATOR] if spec.type == "char" else [])

    tok = resolve_tokenizer(spec, texts)
    streams, counts = {}, {}
    for split in SPLITS:
        streams[split], counts[split] = tokenize_documents(tok, corpus.documents(split))
    fingerprint = hashlib.sha256(tok.hash.encode())
    for split in SPLITS:
        fingerprint.update(streams[split].tobytes())
    return window_bundle(streams, counts, tok, config, corpus.name, fingerprint.hexdigest()[:16],
                         extra_info=_corpus_info(corpus))


@register_dataset(TokenShardsConfig)
def token_shards(config: TokenShardsConfig) -> DataBundle:
    """Token shards from `dlforge lm prepare` (uint16 / uint32 memmaps), as token windows."""
    folder = Path(config.path)
    meta, tok = read_shards(folder, verify=config.verify)
    dtype = np.dtype(meta["dtype"]).newbyteorder("<")
    streams = {s: (folder / m["file"], dtype, m["tokens"]) for s, m in meta["splits"].items()}
    counts = {s: {k: m.get(k) for k in ("tokens", "documents", "chars", "chars_per_token")}
              for s, m in meta["splits"].items()}
    fingerprint = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    return window_bundle(streams, counts, tok, config, str(folder), fingerprint,
                         extra_info={"corpus": meta.get("corpus", {}).get("name")})


# --- building ------------------------------------------------------------------------------------------------------


def window_bundle(streams: dict[str, Any], counts: dict[str, dict[str, Any]], tok: Tokenizer, config: _WindowConfig,
                  source: str, fingerprint: str, extra_info: dict[str, Any] | None = None) -> DataBundle:
    """Token streams per split -> training windows at every `stride`, evaluation windows side by side."""
    def windows(split: str, stride: int) -> TokenWindows | None:
        if split not in streams:
            return None
        ds = TokenWindows(streams[split], config.context, stride)
        return ds if len(ds) else None

    train = windows("train", config.stride)
    if train is None:
        raise DataError(f"{source}: the training split has {counts['train']['tokens']} tokens, fewer than one window "
                        f"of data.context + 1 = {config.context + 1}")
    val, test = windows("val", config.context), windows("test", config.context)
    info: dict[str, Any] = {
        "task": "language_modeling", "num_classes": None, "label_names": None, "source": source,
        "vocab_size": tok.vocab_size, "context": config.context, "stride": config.stride,
        "tokenizer_type": tok.type, "tokenizer_hash": tok.hash,
        **{key: {s: c.get(key) for s, c in counts.items()} for key in ("tokens", "documents", "chars")},
        "chars_per_token": {s: c.get("chars_per_token") for s, c in counts.items()},
        "n_train": len(train), "n_val": len(val) if val else 0, "n_test": len(test) if test else 0,
        **(extra_info or {}),
    }  # fmt: skip
    preprocessing = {"kind": "lm_tokens", "tokenizer_hash": tok.hash, "tokenizer_type": tok.type,
                     "context": config.context, "source": source}
    return DataBundle(train, val, test, info=info, model_defaults={"vocab_size": tok.vocab_size},
                      preprocessing=preprocessing, fingerprint=fingerprint, tokenizer=tok,
                      eval_train=windows("train", config.context))


def _corpus_info(corpus: Corpus) -> dict[str, Any]:
    return {k: v for k, v in corpus.info.items() if k not in ("documents", "chars")} | {"corpus": corpus.name}


# --- reading shards ------------------------------------------------------------------------------------------------


def read_shards(folder: str | Path, verify: bool = True) -> tuple[dict[str, Any], Tokenizer]:
    """(meta.json, tokenizer) of a shard folder, after checking that every file is there, whole (sizes; with
    `verify`, sha256 against manifest.json) and that the tokenizer is the one the shards were made with."""
    folder = Path(folder)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise DataError(f"{folder}: no {META_FILE}; not a token shard folder (write one with dlforge lm prepare)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{meta_path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != SHARD_FORMAT or not isinstance(meta.get("splits"), dict):
        raise DataError(f"{meta_path}: not a {SHARD_FORMAT} description (format and splits expected)")
    if meta.get("dtype") not in ("uint16", "uint32") or "train" not in meta["splits"]:
        raise DataError(f"{meta_path}: expected dtype uint16 or uint32 and a train split")
    itemsize = np.dtype(meta["dtype"]).itemsize
    for split, entry in meta["splits"].items():
        path = folder / str(entry.get("file", ""))
        if split not in SPLITS or Path(entry.get("file", "")).name != entry.get("file") or not path.is_file():
            raise DataError(f"{meta_path}: split {split!r} names a missing or invalid file {entry.get('file')!r}")
        expected = int(entry.get("tokens", -1)) * itemsize
        if path.stat().st_size != expected:
            raise DataError(f"{path}: {path.stat().st_size} bytes, but {META_FILE} says {entry.get('tokens')} "
                            f"{meta['dtype']} tokens ({expected} bytes): an unfinished or damaged shard")
    if verify:
        _verify_manifest(folder)
    tok = load_tokenizer(folder)
    recorded = (meta.get("tokenizer") or {}).get("hash")
    if tok.hash != recorded:
        raise DataError(f"{folder}/tokenizer.json: tokenizer hash {tok.hash[:12]}.. differs from the one the shards "
                        f"were made with ({str(recorded)[:12]}..)")
    if tok.vocab_size != meta.get("vocab_size") or token_dtype(tok.vocab_size).name != meta["dtype"]:
        raise DataError(f"{meta_path}: vocab_size {meta.get('vocab_size')} / dtype {meta['dtype']} do not fit the "
                        f"tokenizer's {tok.vocab_size} tokens")
    return meta, tok


def _verify_manifest(folder: Path) -> None:
    manifest_path = folder / "manifest.json"
    try:
        files = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{manifest_path}: missing or damaged ({exc})") from None
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path}: missing (listed in manifest.json)")
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        if digest != entry.get("sha256"):
            raise DataError(f"{path}: sha256 does not match manifest.json (the file changed after it was written)")
