"""Corpus -> tokenizer and token shards: what `dlforge tokenizer train|report` and `dlforge lm prepare` do.

    report = train_corpus_tokenizer("shakespeare", "bpe", 4096, None)  # -> runs/tokenizers/shakespeare-bpe4096
    report = tokenizer_report(report["out"], "shakespeare")                # on the held-out plays
    report = prepare_shards("shakespeare", "bpe:4096")                     # -> runs/shards/shakespeare-bpe4096

The shard folder that `prepare_shards` writes and the `token_shards` dataset reads is written whole into a hidden
temp sibling, fsynced, then renamed into place, so a kill never leaves a half-written folder under the final name:

    train.bin  val.bin  [test.bin]    token ids, raw little-endian uint16 (vocabulary <= 65,536) or uint32, each
                                      document followed by the tokenizer's end-of-text token (nanoGPT's format:
                                      np.memmap(path, dtype=np.uint16, mode="r"))
    meta.json                         format, dtype, vocab_size, the tokenizer's type and hash, the separator ids, the
                                      corpus, and per split: file, tokens, documents, chars, chars_per_token
    tokenizer.json  tokenizer_config.json   the tokenizer (so the folder is also a tokenizer folder)
    manifest.json                     size and sha256 of every file
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from dlforge.artifacts import write_folder
from dlforge.data.corpus import DOC_SEPARATOR, SPLITS, Corpus, load_corpus
from dlforge.data.tokens import META_FILE, SHARD_FORMAT, separator_ids, token_dtype, tokenize_documents
from dlforge.errors import DataError
from dlforge.paths import refuse_existing
from dlforge.runs.rundir import workspace_path
from dlforge.text.tokenizer import (
    Tokenizer,
    TokenizerSpec,
    load_tokenizer,
    resolve_tokenizer,
    tokenizer_spec,
    train_tokenizer,
)


def _corpus(corpus: str | Path | Corpus, text_field: str = "text", val_fraction: float = 0.05,
            test_fraction: float = 0.05) -> Corpus:
    return corpus if isinstance(corpus, Corpus) else load_corpus(corpus, text_field, val_fraction, test_fraction)


def train_corpus_tokenizer(corpus: str | Path | Corpus, type: str, vocab_size: int | None, out: str | Path | None,
                           special_tokens: list[str] | None = None, lowercase: bool | None = None,
                           min_frequency: int = 2, text_field: str = "text", overwrite: bool = False
                           ) -> dict[str, Any]:
    """Train a tokenizer on the training split of `corpus`, save it in the folder `out` (an existing one only with
    `overwrite`; by default `runs/tokenizers/<corpus>-<type><vocab_size>`), and report it on the validation split
    (see `tokenizer_report`) with the training time."""
    out = refuse_existing(out or workspace_path("tokenizers", f"{_corpus_slug(corpus)}-{type}{vocab_size or ''}"),
                          overwrite)
    corpus = _corpus(corpus, text_field)
    texts = corpus.documents("train") + ([DOC_SEPARATOR] if type == "char" else [])
    start = time.perf_counter()
    tok = train_tokenizer(texts, type, vocab_size, special_tokens, lowercase, min_frequency)
    train_s = time.perf_counter() - start
    tok.save(out)
    report = tokenizer_report(tok, corpus, "val" if corpus.documents("val") else "train")
    return {**report, "out": str(out), "train_chars": corpus.chars("train"), "train_s": round(train_s, 3)}


def tokenizer_report(tokenizer: str | Path | Tokenizer, corpus: str | Path | Corpus, split: str | None = None,
                     text_field: str = "text") -> dict[str, Any]:
    """Vocabulary size, characters per token and the share of unknown tokens of a tokenizer on text: a corpus's
    split (default: validation, the held-out text, for a built-in corpus; every document for a file or folder)."""
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
    if split is None:
        split = "all" if not isinstance(corpus, Corpus) and Path(corpus).exists() else "val"
    corpus = _corpus(corpus, text_field, 0.0, 0.0) if split == "all" else _corpus(corpus, text_field)
    docs = corpus.documents("train" if split == "all" else split)
    if not docs:
        raise DataError(f"{corpus.name}: its {split} split is empty; choose another with --split")
    start = time.perf_counter()
    ids = tok.encode_batch(docs)
    encode_s = time.perf_counter() - start
    tokens = sum(len(i) for i in ids)
    chars = sum(len(d) for d in docs)
    unknown = 0 if tok.unk_id is None else sum(i.count(tok.unk_id) for i in ids)
    return {"tokenizer": tok.type, "hash": tok.hash, "vocab_size": tok.vocab_size, "corpus": corpus.name,
            "split": split, "documents": len(docs), "chars": chars, "tokens": tokens,
            "chars_per_token": chars / tokens if tokens else None, "unknown_share": unknown / tokens if tokens else 0.0,
            "encode_s": round(encode_s, 3)}


def prepare_shards(corpus: str | Path | Corpus, tokenizer: str | dict | TokenizerSpec | Tokenizer,
                   out: str | Path | None = None, overwrite: bool = False, text_field: str = "text",
                   val_fraction: float = 0.05, test_fraction: float = 0.05) -> dict[str, Any]:
    """Tokenize every split of `corpus` (a name, a path or a Corpus) with `tokenizer` (a spec: trained on the
    training split; or a Tokenizer) and write the shard folder `out` (by default `runs/shards/<corpus>-<tokenizer>`).
    Returns meta.json plus timings."""
    out = refuse_existing(out or workspace_path("shards", _shards_name(corpus, tokenizer)), overwrite)
    corpus = _corpus(corpus, text_field, val_fraction, test_fraction)
    start = time.perf_counter()
    if isinstance(tokenizer, Tokenizer):
        tok = tokenizer
    else:
        spec = tokenizer_spec(tokenizer)
        tok = resolve_tokenizer(spec, lambda: corpus.documents("train") + ([DOC_SEPARATOR] if spec.type == "char"
                                                                             else []))
    tokenizer_s = time.perf_counter() - start
    start = time.perf_counter()
    streams, splits = {}, {}
    for split in SPLITS:
        if split == "train" or corpus.documents(split):
            streams[split], splits[split] = tokenize_documents(tok, corpus.documents(split))
            splits[split]["file"] = f"{split}.bin"
    tokenize_s = time.perf_counter() - start
    dtype = token_dtype(tok.vocab_size)
    meta = {
        "format": SHARD_FORMAT, "version": 1, "dtype": dtype.name, "vocab_size": tok.vocab_size,
        "tokenizer": {"type": tok.type, "hash": tok.hash}, "separator": separator_ids(tok),
        "corpus": {k: v for k, v in corpus.info.items() if k not in ("documents", "chars")}, "splits": splits,
    }  # fmt: skip

    def fill(tmp: Path) -> None:
        for split, tokens in streams.items():
            tokens.astype(dtype, copy=False).tofile(tmp / f"{split}.bin")
        for name, content in tok.files().items():
            _write_json(tmp / name, content)
        _write_json(tmp / META_FILE, meta)

    write_folder(out, SHARD_FORMAT, fill)
    return {**meta, "out": str(out), "tokenizer_s": round(tokenizer_s, 3), "tokenize_s": round(tokenize_s, 3)}


def _corpus_slug(corpus: str | Path | Corpus) -> str:
    """A corpus's name in a default output path: a built-in corpus's name, a file's or folder's name."""
    if isinstance(corpus, Corpus):
        return corpus.name
    return Path(corpus).stem if Path(corpus).exists() else str(corpus)


def _shards_name(corpus: str | Path | Corpus, tokenizer: str | dict | TokenizerSpec | Tokenizer) -> str:
    """`shakespeare-bpe4096` for (shakespeare, bpe:4096); a tokenizer folder gives its name, after the corpus's
    unless it starts with it."""
    if isinstance(tokenizer, Tokenizer):
        kind = f"{tokenizer.type}{tokenizer.vocab_size}"
    else:
        spec = tokenizer_spec(tokenizer)
        kind = Path(spec.path).name if spec.path else f"{spec.type}{spec.vocab_size or ''}"
    corpus_name = _corpus_slug(corpus)
    return kind if kind.startswith(corpus_name) else f"{corpus_name}-{kind}"


def _write_json(path: Path, content: Any) -> None:
    path.write_text(json.dumps(content, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
