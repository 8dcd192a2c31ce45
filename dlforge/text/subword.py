"""Subword tokenizers on the Hugging Face `tokenizers` library: byte-level BPE (GPT-2 style) and WordPiece (BERT).

    tok = SubwordTokenizer.train_bpe(texts, vocab_size=4096)              # special token <|endoftext|> (eos)
    tok = SubwordTokenizer.train_wordpiece(texts, vocab_size=8000, lowercase=True)   # [PAD] [UNK] [CLS] [SEP] [MASK]
    tok = SubwordTokenizer.from_vocab_txt("vocab.txt", lowercase=True)    # a BERT vocabulary
    tok = SubwordTokenizer.from_hf_json(json.load(open("tokenizer.json")))  # any tokenizers-format file

Byte-level BPE (Radford et al. 2019): text is split by GPT-2's regex, each piece's UTF-8 bytes are mapped to 256
printable symbols, and merges are learned over those, so every string encodes (no unknown token) and decodes back
exactly, NUL, CRLF and lone combining marks included. WordPiece (Wu et al. 2016, as in BERT): BERT's normalizer
(control characters removed, CJK characters spaced, optional lowercasing with accents stripped) and
pre-tokenizer (whitespace and punctuation), then the greedy longest-match-first subword split with `##` marking a
continuation; decoding joins the pieces and so is not an exact inverse. `encode(text)` gives the text's ids;
`add_special_tokens=True` adds the post-processor's template ([CLS] text [SEP] for WordPiece).

Training is deterministic: the same texts in the same order and the same settings give the same vocabulary and
hash. Runtime settings of a loaded tokenizer.json (padding, truncation) are dropped; `backend` is the underlying
`tokenizers.Tokenizer` for pairs, offsets, padding and truncation.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from dlforge.errors import ConfigError, DataError
from dlforge.paths import existing_file
from dlforge.text.tokenizer_base import CONVENTIONAL, Tokenizer, ids_list, roles_from_names

BPE_SPECIALS = ("<|endoftext|>",)
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
KINDS = {"BPE": "bpe", "WordPiece": "wordpiece", "Unigram": "unigram", "WordLevel": "wordlevel"}


class SubwordTokenizer(Tokenizer):
    """A `tokenizers.Tokenizer` behind dlforge's tokenizer interface; `type` is "bpe", "wordpiece", ..."""

    def __init__(self, backend: Backend, special_tokens: dict[str, str] | None = None,
                 chat_template: str | None = None, source: str = "tokenizer"):
        backend.no_padding()
        backend.no_truncation()
        self.backend = backend
        state = json.loads(backend.to_str())
        self.type = KINDS.get(state["model"]["type"], state["model"]["type"].lower())
        specials = [t["content"] for t in state.get("added_tokens", []) if t.get("special")]
        self.special_tokens = dict(special_tokens) if special_tokens is not None else roles_from_names(specials)
        self.chat_template = chat_template
        self._vocab_size = backend.get_vocab_size(with_added_tokens=True)
        self.check_roles(source)

    # --- building ------------------------------------------------------------------------------------------------

    @classmethod
    def train_bpe(cls, texts: Iterable[str], vocab_size: int, special_tokens: Iterable[str] = BPE_SPECIALS,
                  lowercase: bool = False, min_frequency: int = 2) -> SubwordTokenizer:
        """Byte-level BPE learned from `texts`. The first special token is the end-of-text (eos) token unless one
        has a conventional eos name (<|endoftext|>, </s>, <eos>)."""
        special_tokens = _specials(special_tokens)
        if vocab_size < 256 + len(special_tokens):
            raise ConfigError(f"vocab_size: byte-level BPE needs at least 256 byte tokens + {len(special_tokens)} "
                              f"special = {256 + len(special_tokens)}, got {vocab_size}")
        backend = Backend(models.BPE())
        if lowercase:
            backend.normalizer = normalizers.Lowercase()
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                      special_tokens=special_tokens,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        backend.train_from_iterator(texts, trainer)
        roles = roles_from_names(special_tokens)
        if special_tokens and "eos" not in roles:
            roles["eos"] = special_tokens[0]
        return cls(backend, roles, source="train_bpe")

    @classmethod
    def train_wordpiece(cls, texts: Iterable[str], vocab_size: int, special_tokens: Iterable[str] = BERT_SPECIALS,
                        lowercase: bool = True, min_frequency: int = 2) -> SubwordTokenizer:
        """BERT-style WordPiece learned from `texts`; needs [UNK], [CLS] and [SEP] among the special tokens."""
        special_tokens = _specials(special_tokens)
        roles = roles_from_names(special_tokens)
        for role in ("unk", "cls", "sep"):
            if role not in roles:
                raise ConfigError(f"special_tokens: WordPiece needs a {role} token ({' or '.join(_names(role))})")
        if vocab_size <= len(special_tokens):
            raise ConfigError(f"vocab_size: {vocab_size} leaves no room beside {len(special_tokens)} special tokens")
        texts = list(texts)
        # The trainer numbers the "##x" continuation symbols in hash-map order, which then breaks ties between
        # merges differently from run to run; naming them up front, sorted, makes training deterministic.
        backend = Backend(models.WordPiece(unk_token=roles["unk"]))
        _bert_pipeline(backend, lowercase)
        continuations: set[str] = set()
        for text in texts:
            for word, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text)):
                continuations.update(word[1:])
        fixed = special_tokens + ["##" + c for c in sorted(continuations)]
        trainer = trainers.WordPieceTrainer(vocab_size=max(vocab_size, len(fixed)), min_frequency=min_frequency,
                                            show_progress=False, special_tokens=fixed)
        backend.train_from_iterator(texts, trainer)
        vocab = backend.get_vocab(with_added_tokens=True)
        final = Backend(models.WordPiece(vocab, unk_token=roles["unk"]))  # "##x" as plain vocabulary entries again
        _bert_pipeline(final, lowercase)
        final.add_special_tokens(special_tokens)
        _bert_template(final, roles)
        return cls(final, roles, source="train_wordpiece")

    @classmethod
    def from_vocab_txt(cls, path: str | Path, lowercase: bool = True) -> SubwordTokenizer:
        """A BERT tokenizer from its vocab.txt (one token per line, the line number is the id)."""
        path = existing_file(path, "a vocabulary file (vocab.txt)")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text (byte offset {exc.start})") from None
        vocab: dict[str, int] = {}
        for number, token in enumerate(lines, start=1):
            if token in vocab:
                raise DataError(f"{path}:{number}: token {token!r} appears twice (first on line {vocab[token] + 1})")
            vocab[token] = number - 1
        roles = roles_from_names(t for t in BERT_SPECIALS if t in vocab)
        for role in ("unk", "cls", "sep"):
            if role not in roles:
                raise DataError(f"{path}: a BERT vocabulary needs a {role} token ({' or '.join(_names(role))})")
        backend = Backend(models.WordPiece(vocab, unk_token=roles["unk"]))
        _bert_pipeline(backend, lowercase)
        _bert_template(backend, roles)
        return cls(backend, roles, source=str(path))

    @classmethod
    def from_hf_json(cls, state: dict[str, Any], special_tokens: dict[str, str] | None = None,
                     chat_template: str | None = None, source: str = "tokenizer.json") -> SubwordTokenizer:
        """A tokenizer from the parsed content of a `tokenizers` tokenizer.json."""
        if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
            raise DataError(f"{source}: not a tokenizers-format tokenizer.json (no 'model' object)")
        try:
            backend = Backend.from_str(json.dumps(state))
        except Exception as exc:  # the Rust parser's error: unknown fields, wrong types
            raise DataError(f"{source}: not a valid tokenizer.json ({str(exc).splitlines()[0][:200]})") from None
        return cls(backend, special_tokens, chat_template, source)

    # --- the interface -------------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self.backend.id_to_token(i)

    def encode_array(self, text: str, add_special_tokens: bool = False) -> np.ndarray:
        return np.asarray(self.encode(text, add_special_tokens), dtype=np.int64)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        _check_text(text)
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: Iterable[str], add_special_tokens: bool = False) -> list[list[int]]:
        """Ids of each text, encoded in parallel (tokenizers' thread pool)."""
        texts = list(texts)
        for t in texts:
            _check_text(t)
        encodings = self.backend.encode_batch_fast(texts, add_special_tokens=add_special_tokens)
        return [e.ids for e in encodings]

    def decode(self, ids: Iterable[int] | np.ndarray, skip_special_tokens: bool = False) -> str:
        """Text of `ids` (a list, array or tensor); an id outside the vocabulary is a ValueError."""
        return self.backend.decode(ids_list(ids, self.vocab_size), skip_special_tokens=skip_special_tokens)

    def decode_stream(self) -> _StreamDecoder:
        return _StreamDecoder(self.backend)

    def canonical(self) -> Any:
        state = json.loads(self.backend.to_str())
        state["truncation"], state["padding"] = None, None
        return state

    def tokenizer_json(self) -> dict[str, Any]:
        return self.canonical()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state: {"type", "tokenizer": tokenizer.json content, "special_tokens", "chat_template", "hash"}."""
        return {"type": self.type, "tokenizer": self.canonical(), "special_tokens": dict(self.special_tokens),
                "chat_template": self.chat_template, "hash": self.hash}

    @classmethod
    def from_dict(cls, state: dict[str, Any], source: str = "tokenizer") -> SubwordTokenizer:
        """Rebuild from `to_dict()`; a damaged state or a hash that does not match is a DataError."""
        if not isinstance(state, dict) or not isinstance(state.get("tokenizer"), dict):
            raise DataError(f"{source}: expected a tokenizer state with a 'tokenizer' object")
        specials = state.get("special_tokens")
        if not isinstance(specials, dict) or not all(isinstance(v, str) for v in specials.values()):
            raise DataError(f"{source}: 'special_tokens' must map roles to token strings")
        tok = cls.from_hf_json(state["tokenizer"], specials, state.get("chat_template"), source)
        if state.get("type") != tok.type:
            raise DataError(f"{source}: 'type' is {state.get('type')!r} but the tokenizer is {tok.type!r}")
        if "hash" in state and state["hash"] != tok.hash:
            raise DataError(f"{source}: 'hash' does not match the tokenizer (edited by hand?)")
        return tok

    def vocab_txt(self) -> str:
        """The vocabulary one token per line in id order (BERT's vocab.txt), for WordPiece."""
        vocab = self.backend.get_vocab(with_added_tokens=True)
        ordered = sorted(vocab.items(), key=lambda kv: kv[1])
        return "".join(token + "\n" for token, _ in ordered)

    def save(self, path: str | Path) -> Path:
        """tokenizer.json and tokenizer_config.json (and BERT's vocab.txt for WordPiece) into the folder `path`."""
        out = super().save(path)
        if self.type == "wordpiece":
            from dlforge.runs.rundir import atomic_write_text

            atomic_write_text(out.parent / "vocab.txt", self.vocab_txt())
        return out


class _StreamDecoder:
    """Token-by-token decoding that holds back a partial UTF-8 character until its last byte arrives."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.stream = decoders.DecodeStream(skip_special_tokens=False)

    def step(self, token_id: int) -> str:
        return self.stream.step(self.backend, int(token_id)) or ""


def _bert_pipeline(backend: Backend, lowercase: bool) -> None:
    """BERT's normalizer (accents stripped when lowercasing, as BertTokenizerFast does), pre-tokenizer and decoder."""
    backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                    lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")


def _bert_template(backend: Backend, roles: dict[str, str]) -> None:
    """[CLS] A [SEP] and [CLS] A [SEP] B [SEP], the second segment with type id 1."""
    cls, sep = roles["cls"], roles["sep"]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, backend.token_to_id(cls)), (sep, backend.token_to_id(sep))])


def _specials(tokens: Iterable[str]) -> list[str]:
    tokens = list(tokens)
    for t in tokens:
        if not isinstance(t, str) or not t:
            raise ConfigError(f"special_tokens: expected non-empty strings, got {t!r}")
    if len(set(tokens)) != len(tokens):
        raise ConfigError(f"special_tokens: {tokens} lists a token twice")
    return tokens


def _names(role: str) -> tuple[str, ...]:
    return CONVENTIONAL[role]


def _check_text(text: str) -> None:
    """The Rust side takes only valid Unicode: name a lone surrogate rather than fail with a bare TypeError."""
    if not isinstance(text, str):
        raise TypeError(f"expected a str to encode, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataError(f"text has a lone surrogate U+{ord(text[exc.start]):04X} at character {exc.start}; "
                        "it is not valid Unicode and has no UTF-8 bytes") from None
