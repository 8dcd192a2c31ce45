"""Tokenizers: text <-> token ids, saved as a folder beside every model that uses one.

    tok = train_tokenizer(texts, "bpe", vocab_size=4096)          # or "wordpiece", or "char"
    ids = tok.encode("ROMEO:")
    tok.decode(ids)                                                # "ROMEO:"
    tok.save(folder)                                               # folder/tokenizer.json + tokenizer_config.json
    load_tokenizer(folder).hash == tok.hash                        # also reads a HF tokenizer.json or a vocab.txt
    check_tokenizer(tok, expected_hash, "runs/gpt-1/model")        # CheckpointError when they differ

Three kinds share one interface (`dlforge.text.tokenizer_base.Tokenizer`): `CharTokenizer` (one id per character,
below), and `SubwordTokenizer` (`dlforge.text.subword`) for byte-level BPE and WordPiece on the Hugging Face
`tokenizers` library. `CharTokenizer`: id 0 is `<unk>`, which every character outside the vocabulary encodes to
and which decodes to U+FFFD (the replacement character); ids 1.. are the known characters in code-point order, so
the same set of characters always gives the same ids.

A tokenizer is named in configs and on the command line by a spec: `char`, `bpe:4096`, `wordpiece:8000`, or a
folder (any other string), or in YAML `{type: bpe, vocab_size: 4096, special_tokens: [...]}` / `{path: DIR}`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError, model_validator

from dlforge.config import validation_to_config_error
from dlforge.errors import CheckpointError, ConfigError, DataError, DlforgeError, clip_repr
from dlforge.paths import exists
from dlforge.sections import Section
from dlforge.text.subword import BERT_SPECIALS, BPE_SPECIALS, SubwordTokenizer
from dlforge.text.tokenizer_base import (
    CONFIG_FILE,
    FORMAT,
    ROLES,
    TOKENIZER_FILE,
    Tokenizer,
    ids_list,
    read_json,
)

__all__ = ["CharTokenizer", "SubwordTokenizer", "Tokenizer", "TokenizerSpec", "check_tokenizer", "has_tokenizer",
           "load_tokenizer", "model_tokenizer", "resolve_tokenizer", "same_vocabulary", "tokenizer_from_dict",
           "tokenizer_from_files", "tokenizer_from_ref", "tokenizer_spec", "train_tokenizer", "with_chat_template",
           "TOKENIZER_FILE", "CONFIG_FILE"]

UNK_TEXT = "\ufffd"  # what <unk> decodes to
KINDS = ("char", "bpe", "wordpiece")


class CharTokenizer(Tokenizer):
    """Character-level tokenizer: id 0 is `<unk>`, ids 1.. the vocabulary's characters in code-point order."""

    type = "char"
    unk_token = "<unk>"

    def __init__(self, chars: Iterable[str], chat_template: str | None = None):
        chars = sorted(set(chars))
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"CharTokenizer: every vocabulary entry must be one character, got {c!r}")
        self.chars: list[str] = chars
        self.special_tokens = {"unk": self.unk_token}
        self.chat_template = chat_template
        self._id = {c: i + 1 for i, c in enumerate(chars)}
        # vectorized encoding: sorted code points and their ids (searchsorted on the text's code points)
        self._points = np.array([ord(c) for c in chars], dtype=np.int64)

    @classmethod
    def from_text(cls, text: str | Iterable[str]) -> CharTokenizer:
        """The vocabulary of every distinct character in `text` (a string, or several)."""
        if isinstance(text, str):
            return cls(set(text))
        chars: set[str] = set()
        for t in text:
            chars.update(t)
        return cls(chars)

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1  # + <unk>

    @property
    def hash(self) -> str:
        """SHA-256 of the vocabulary (type, unk token and characters, in id order; and the chat template if set)."""
        blob = [self.type, self.unk_token, self.chars]
        if self.chat_template is not None:
            blob.append(self.chat_template)
        return hashlib.sha256(json.dumps(blob, ensure_ascii=True).encode()).hexdigest()

    def token_to_id(self, token: str) -> int | None:
        return 0 if token == self.unk_token else self._id.get(token)

    def id_to_token(self, i: int) -> str | None:
        if i == 0:
            return self.unk_token
        return self.chars[i - 1] if 0 < i <= len(self.chars) else None

    # --- encoding ----------------------------------------------------------------------------------------------

    def encode_array(self, text: str, add_special_tokens: bool = False) -> np.ndarray:
        """Token ids of `text` as an int64 array (N,); characters outside the vocabulary become `unk_id`."""
        if not text:
            return np.zeros(0, dtype=np.int64)
        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)
        if len(self._points) == 0:
            return np.zeros(len(points), dtype=np.int64)
        pos = np.searchsorted(self._points, points).clip(max=len(self._points) - 1)
        known = self._points[pos] == points
        return np.where(known, pos + 1, 0).astype(np.int64)

    def decode(self, ids: Iterable[int] | np.ndarray, skip_special_tokens: bool = False) -> str:
        """Text of `ids` (a list, array or tensor); `unk_id` decodes to U+FFFD. An id out of range is a ValueError."""
        ids = ids_list(ids, self.vocab_size)
        return "".join(UNK_TEXT if i == 0 else self.chars[i - 1] for i in ids if not (skip_special_tokens and i == 0))

    def decode_stream(self) -> _CharStream:
        return _CharStream(self)

    def canonical(self) -> Any:
        return [self.unk_token, self.chars]

    # --- saving ------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state: {"type": "char", "unk_token": "<unk>", "chars": [...], "hash": ...} (+ chat_template)."""
        state = {"type": self.type, "unk_token": self.unk_token, "chars": list(self.chars), "hash": self.hash}
        if self.chat_template is not None:
            state["chat_template"] = self.chat_template
        return state

    def tokenizer_json(self) -> dict[str, Any]:
        return self.to_dict()

    def transformers_json(self) -> dict[str, Any]:
        """The vocabulary as a Hugging Face tokenizer.json, for transformers' AutoTokenizer: a BPE model without
        merges (each character one token, the others <unk>) and a decoder that joins the characters (<unk> as
        U+FFFD, as `decode` does). `from_transformers_json` reads it back."""
        from tokenizers import Tokenizer as Backend
        from tokenizers import decoders, models

        for c in self.chars:
            if 0xD800 <= ord(c) <= 0xDFFF:
                raise DataError(f"character U+{ord(c):04X} of the vocabulary is a lone surrogate, not valid Unicode: "
                                "a Hugging Face tokenizer cannot hold it")
        backend = Backend(models.BPE(vocab={self.unk_token: 0, **self._id}, merges=[], unk_token=self.unk_token))
        backend.decoder = decoders.Sequence([decoders.Replace(self.unk_token, UNK_TEXT), decoders.Fuse()])
        return json.loads(backend.to_str())

    @classmethod
    def from_transformers_json(cls, state: Any, chat_template: str | None = None, source: str = "tokenizer"
                               ) -> CharTokenizer:
        """Rebuild from `transformers_json()` (a folder exported for transformers, imported again)."""
        model = state.get("model") if isinstance(state, dict) else None
        vocab = model.get("vocab") if isinstance(model, dict) else None
        if not isinstance(vocab, dict) or model.get("merges") or vocab.get(cls.unk_token) != 0:
            raise DataError(f"{source}: not a character vocabulary (a BPE model without merges, {cls.unk_token} = 0)")
        chars = sorted((c for c in vocab if c != cls.unk_token), key=lambda c: vocab[c])
        return cls.from_dict({"type": cls.type, "unk_token": cls.unk_token, "chars": chars,
                              **({"chat_template": chat_template} if chat_template is not None else {})}, source)

    @classmethod
    def from_dict(cls, state: dict[str, Any], source: str = "tokenizer") -> CharTokenizer:
        """Rebuild from `to_dict()`; a wrong type, a bad vocabulary or a hash that does not match is a DataError."""
        if not isinstance(state, dict) or state.get("type") != cls.type:
            found = state.get("type") if isinstance(state, dict) else type(state).__name__
            raise DataError(f"{source}: expected a tokenizer of type 'char', found {found!r}")
        chars = state.get("chars")
        if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise DataError(f"{source}: 'chars' must be a list of single characters")
        if len(set(chars)) != len(chars) or chars != sorted(chars):
            raise DataError(f"{source}: 'chars' must be distinct and in code-point order")
        template = state.get("chat_template")
        if template is not None and not isinstance(template, str):
            raise DataError(f"{source}: 'chat_template' must be a string")
        tok = cls(chars, chat_template=template)
        if "hash" in state and state["hash"] != tok.hash:
            raise DataError(f"{source}: 'hash' does not match the vocabulary (edited by hand?)")
        return tok

    def save(self, path: str | Path) -> Path:
        """Write tokenizer.json and tokenizer_config.json into the folder `path`; a path ending in .json writes
        only that file (the tokenizer alone, as older dlforge did)."""
        path = Path(path)
        if path.suffix != ".json":
            return super().save(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        """Read a character tokenizer from a folder or a .json file."""
        tok = load_tokenizer(path)
        if not isinstance(tok, CharTokenizer):
            raise DataError(f"{path}: expected a tokenizer of type 'char', found {tok.type!r}")
        return tok


class _CharStream:
    def __init__(self, tok: CharTokenizer):
        self.tok = tok

    def step(self, token_id: int) -> str:
        return self.tok.decode([token_id])


# --- training and specs -------------------------------------------------------------------------------------------


def train_tokenizer(texts: Iterable[str], type: str = "bpe", vocab_size: int | None = None,
                    special_tokens: list[str] | None = None, lowercase: bool | None = None,
                    min_frequency: int = 2) -> Tokenizer:
    """A tokenizer learned from `texts` (documents): "char" (every character seen), "bpe" (byte-level, lowercase off
    by default, special tokens <|endoftext|>) or "wordpiece" (BERT's, lowercase on by default, [PAD] [UNK] [CLS]
    [SEP] [MASK]). `vocab_size` is required for bpe and wordpiece and not used by char."""
    if type == "char":
        for key, value in (("vocab_size", vocab_size), ("special_tokens", special_tokens), ("lowercase", lowercase)):
            if value is not None:
                raise ConfigError(f"{key}: not used by the char tokenizer (its vocabulary is every character seen)")
        return CharTokenizer.from_text(texts)
    if type not in KINDS:
        raise ConfigError(f"type: unknown tokenizer type {type!r}; expected one of {', '.join(KINDS)}")
    if vocab_size is None:
        raise ConfigError(f"vocab_size: required for a {type} tokenizer (e.g. {type}:4096)")
    if type == "bpe":
        specials = BPE_SPECIALS if special_tokens is None else special_tokens
        return SubwordTokenizer.train_bpe(texts, vocab_size, specials, bool(lowercase), min_frequency)
    specials = BERT_SPECIALS if special_tokens is None else special_tokens
    return SubwordTokenizer.train_wordpiece(texts, vocab_size, specials, lowercase is not False, min_frequency)


class TokenizerSpec(Section):
    """Which tokenizer: train one (`type`, `vocab_size`, ...) on the training text, or load one (`path`)."""

    type: Literal["char", "bpe", "wordpiece"] | None = Field(None, description="train this kind of tokenizer")
    vocab_size: int | None = Field(None, ge=2, description="bpe / wordpiece: vocabulary size, special tokens included")
    special_tokens: list[str] | None = Field(None, description="default: <|endoftext|> (bpe); BERT's five (wordpiece)")
    lowercase: bool | None = Field(None, description="default: false for bpe, true for wordpiece")
    min_frequency: int = Field(2, ge=1, description="bpe / wordpiece: merges seen fewer times are not learned")
    path: str | None = Field(None, description="load the tokenizer folder (or tokenizer.json / vocab.txt) instead")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return parse_spec(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_source(self) -> TokenizerSpec:
        if (self.type is None) == (self.path is None):
            raise ValueError("give either type (to train a tokenizer) or path (to load one)")
        if self.path is not None and self.vocab_size is not None:
            raise ValueError("vocab_size is not used with path (the folder has its vocabulary)")
        if self.type in ("bpe", "wordpiece") and self.vocab_size is None:
            raise ValueError(f"vocab_size is required to train a {self.type} tokenizer (e.g. {self.type}:4096)")
        if self.type == "char" and self.vocab_size is not None:
            raise ValueError("vocab_size is not used by the char tokenizer (its vocabulary is every character seen)")
        return self


_SPEC = re.compile(r"(char|bpe|wordpiece)(?::(\d+))?")
_SIZED = re.compile(r"(bpe|wordpiece):.*")


def parse_spec(value: str) -> dict[str, Any]:
    """`char`, `bpe:4096`, `wordpiece:8000` -> {type, vocab_size}; any other string -> {path}, but for `bpe:abc`,
    which no folder is called: that is a size that is not a number."""
    match = _SPEC.fullmatch(value)
    if match is None:
        sized = _SIZED.fullmatch(value)
        if sized and not exists(value):
            raise ConfigError(f"tokenizer {clip_repr(value)}: in {sized[1]}:N, N is the vocabulary size, a positive "
                              f"whole number (e.g. {sized[1]}:4096)")
        return {"path": value}
    return {"type": match[1], **({"vocab_size": int(match[2])} if match[2] else {})}


def tokenizer_spec(value: str | dict | TokenizerSpec) -> TokenizerSpec:
    """A spec from `char`, `bpe:4096`, `wordpiece:8000`, a folder path (any other string), or a mapping."""
    if isinstance(value, TokenizerSpec):
        return value
    if not isinstance(value, str | dict) or not value:
        raise ConfigError(f"tokenizer: expected char, bpe:N, wordpiece:N or a folder, got {value!r}")
    try:
        return TokenizerSpec.model_validate(value)
    except ValidationError as exc:
        raise validation_to_config_error(exc, "tokenizer", list(TokenizerSpec.model_fields)) from None


def resolve_tokenizer(spec: str | dict | TokenizerSpec, texts: Callable[[], Iterable[str]]) -> Tokenizer:
    """Load the spec's folder (or the tokenizer of the run it names, see `tokenizer_from_ref`), or train its kind
    on `texts()` (called only when training)."""
    spec = tokenizer_spec(spec)
    if spec.path is not None:
        return tokenizer_from_ref(spec.path)
    return train_tokenizer(texts(), spec.type, spec.vocab_size, spec.special_tokens, spec.lowercase,
                           spec.min_frequency)


# --- loading ------------------------------------------------------------------------------------------------------


def tokenizer_from_dict(state: dict[str, Any], source: str = "tokenizer") -> Tokenizer:
    """Any tokenizer from its `to_dict()`, picked by its "type"."""
    kind = state.get("type") if isinstance(state, dict) else None
    if kind == CharTokenizer.type:
        return CharTokenizer.from_dict(state, source)
    if kind in KINDS or (isinstance(state, dict) and isinstance(state.get("tokenizer"), dict)):
        return SubwordTokenizer.from_dict(state, source)
    raise DataError(f"{source}: unknown tokenizer type {kind!r}; expected one of {', '.join(KINDS)}")


def tokenizer_from_files(tokenizer_json: Any, config: Any = None, source: str = "tokenizer") -> Tokenizer:
    """A tokenizer from the parsed tokenizer.json and, if there is one, tokenizer_config.json (dlforge's, whose
    hash must match, or transformers', whose *_token keys name the special tokens)."""
    if not isinstance(tokenizer_json, dict):
        raise DataError(f"{source}/{TOKENIZER_FILE}: expected a JSON object")
    if config is not None and not isinstance(config, dict):
        raise DataError(f"{source}/{CONFIG_FILE}: expected a JSON object")
    config = config or {}
    template = config.get("chat_template")
    if template is not None and not isinstance(template, str):
        raise DataError(f"{source}/{CONFIG_FILE}: 'chat_template' must be a string")
    meta = config.get("dlforge")
    specials = _transformers_specials(config)
    if isinstance(meta, dict):
        if meta.get("format") != FORMAT or not isinstance(meta.get("special_tokens"), dict):
            raise DataError(f"{source}/{CONFIG_FILE}: the 'dlforge' section is not a {FORMAT} description")
        specials = meta["special_tokens"]
    if tokenizer_json.get("type") == CharTokenizer.type:
        tok: Tokenizer = CharTokenizer.from_dict(tokenizer_json, f"{source}/{TOKENIZER_FILE}")
        if template is not None:
            tok.chat_template = template
    elif isinstance(meta, dict) and meta.get("type") == CharTokenizer.type:  # exported for transformers
        tok = CharTokenizer.from_transformers_json(tokenizer_json, template, f"{source}/{TOKENIZER_FILE}")
    else:
        tok = SubwordTokenizer.from_hf_json(tokenizer_json, specials or None, template, f"{source}/{TOKENIZER_FILE}")
    if isinstance(meta, dict):
        if meta.get("type") != tok.type:
            raise DataError(f"{source}/{CONFIG_FILE}: type {meta.get('type')!r} but tokenizer.json holds {tok.type!r}")
        if meta.get("hash") != tok.hash:
            raise DataError(f"{source}/{TOKENIZER_FILE}: its hash {tok.hash[:12]}.. does not match the one recorded in "
                            f"{CONFIG_FILE} ({str(meta.get('hash'))[:12]}..): the tokenizer was changed after saving")
    return tok


def _transformers_specials(config: dict[str, Any]) -> dict[str, str]:
    specials = {}
    for role in ROLES:
        value = config.get(f"{role}_token")
        if isinstance(value, dict):  # transformers' serialized AddedToken
            value = value.get("content")
        if isinstance(value, str):
            specials[role] = value
    return specials


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer from a folder (tokenizer.json + optional tokenizer_config.json, or a BERT vocab.txt), or from a
    tokenizer.json / vocab.txt file. A damaged file or a hash that does not match is a DataError naming the file."""
    path = Path(path)
    if path.is_file():
        if path.suffix == ".txt":
            return SubwordTokenizer.from_vocab_txt(path)
        return tokenizer_from_files(read_json(path), None, str(path.parent))
    if not path.is_dir():
        raise DataError(f"{path}: tokenizer file not found (no such folder or file)")
    config = read_json(path / CONFIG_FILE) if (path / CONFIG_FILE).is_file() else None
    if (path / TOKENIZER_FILE).is_file():
        return tokenizer_from_files(read_json(path / TOKENIZER_FILE), config, str(path))
    if (path / "vocab.txt").is_file():
        lowercase = (config or {}).get("do_lower_case", True)
        return SubwordTokenizer.from_vocab_txt(path / "vocab.txt", lowercase=bool(lowercase))
    raise DataError(f"{path}: no {TOKENIZER_FILE} or vocab.txt in this folder")


def tokenizer_from_ref(ref: str | Path, runs_dir: str | Path = "runs") -> Tokenizer:
    """The tokenizer `ref` names: a tokenizer folder or file (tokenizer.json, vocab.txt; a transformers folder among
    them), or a dlforge model folder or run (a folder, a name, `latest`, `latest:NAME`): the tokenizer that model was
    trained with, checked against its recorded hash."""
    path = Path(ref)
    is_model_folder = (path / "manifest.json").is_file()  # a dlforge model folder holds a tokenizer.json too
    has_tokenizer = (path / TOKENIZER_FILE).is_file() or (path / "vocab.txt").is_file()
    if path.is_file() or (has_tokenizer and not is_model_folder):
        return load_tokenizer(path)
    if not is_model_folder and path.is_dir() and not (path / "config.yaml").is_file():
        raise DataError(f"{path}: no {TOKENIZER_FILE} or vocab.txt in this folder, and not a run or model folder")
    from dlforge.artifacts import read_model_meta
    from dlforge.runs.rundir import resolve_run

    if is_model_folder:
        model_dir = path
    else:
        try:
            model_dir = resolve_run(str(ref), runs_dir) / "model"
        except DlforgeError as exc:
            raise DataError(f"{ref}: no tokenizer folder or file of that name, nor a run ({exc})") from None
    if not (model_dir / "config.json").is_file():
        raise DataError(f"{model_dir}: no model folder (the run has not finished); its tokenizer is saved there")
    return model_tokenizer(read_model_meta(model_dir), str(model_dir))


def with_chat_template(tok: Tokenizer, template: str | None) -> Tokenizer:
    """A copy of `tok` with `template` as its chat template (None: without one). The vocabulary is the same, the hash
    is not: the template is part of it."""
    if template is not None and not isinstance(template, str):
        raise ConfigError(f"chat_template: expected a Jinja template string, got {type(template).__name__}")
    out = copy.copy(tok)  # the vocabulary (and a subword tokenizer's backend) is shared: neither changes
    out.chat_template = template
    return out


def same_vocabulary(a: Tokenizer, b: Tokenizer) -> bool:
    """Whether `a` and `b` encode and decode alike: equal hashes once their chat templates are set aside."""
    return with_chat_template(a, None).hash == with_chat_template(b, None).hash


# --- a model's tokenizer ------------------------------------------------------------------------------------------


def check_tokenizer(tok: Tokenizer, expected_hash: str, where: str) -> None:
    """CheckpointError unless `tok` is the tokenizer (by hash) that the model at `where` was trained with."""
    if tok.hash != expected_hash:
        raise CheckpointError(f"{where}: tokenizer hash {tok.hash[:12]}.. differs from the one the model was trained "
                              f"with ({expected_hash[:12]}..); use the tokenizer saved in the model folder")


def has_tokenizer(meta: dict[str, Any]) -> bool:
    """Whether a loaded model folder (`load_model`'s meta) holds a tokenizer (see `model_tokenizer`)."""
    extra = meta.get("extra") or {}
    return TOKENIZER_FILE in extra or isinstance((extra.get("preprocessing.json") or {}).get("tokenizer"), dict)


def model_tokenizer(meta: dict[str, Any], where: str) -> Tokenizer:
    """The tokenizer of a loaded model folder (`load_model`'s meta, e.g. `dlforge.load(run).meta`), checked against
    the hash recorded in its preprocessing.json. Older character runs keep it inside preprocessing.json."""
    extra = meta.get("extra") or {}
    pre = extra.get("preprocessing.json") or {}
    if TOKENIZER_FILE in extra:
        tok = tokenizer_from_files(extra[TOKENIZER_FILE], extra.get(CONFIG_FILE), where)
    elif has_tokenizer(meta):
        tok = tokenizer_from_dict(pre["tokenizer"], source=f"{where}: preprocessing.json")
    else:
        raise DlforgeError(f"{where}: the model has no tokenizer (no {TOKENIZER_FILE}, and none in its "
                           "preprocessing.json): not a language model run")
    expected = pre.get("tokenizer_hash") or (pre.get("tokenizer") or {}).get("hash")
    if isinstance(expected, str):
        check_tokenizer(tok, expected, where)
    return tok
