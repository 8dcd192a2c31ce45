"""Tokenizers: text <-> token ids, saved beside a model as `tokenizer.json`.

    tok = CharTokenizer.from_text(train_text)
    ids = tok.encode("ROMEO:")          # [12, 24, 22, 14, 24, 9]
    tok.decode(ids)                     # "ROMEO:"
    tok.save(model_dir)                 # model_dir/tokenizer.json
    CharTokenizer.load(model_dir).hash == tok.hash

`CharTokenizer`: one id per character (a Unicode code point). Id 0 is `<unk>`, which every character outside the
vocabulary encodes to and which decodes to U+FFFD (the replacement character); ids 1.. are the known characters in
code-point order, so the same set of characters always gives the same ids. `tokenizer_from_dict` rebuilds any
tokenizer from its `to_dict()` by its "type".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from dlforge.errors import DataError

TOKENIZER_FILE = "tokenizer.json"
UNK_TEXT = "\ufffd"  # what <unk> decodes to


class CharTokenizer:
    """Character-level tokenizer: id 0 is `<unk>`, ids 1.. the vocabulary's characters in code-point order."""

    type = "char"
    unk_token = "<unk>"
    unk_id = 0

    def __init__(self, chars: Iterable[str]):
        chars = sorted(set(chars))
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"CharTokenizer: every vocabulary entry must be one character, got {c!r}")
        self.chars: list[str] = chars
        self._id = {c: i + 1 for i, c in enumerate(chars)}
        # vectorized encoding: sorted code points and their ids (searchsorted on the text's code points)
        self._points = np.array([ord(c) for c in chars], dtype=np.int64)

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The vocabulary of every distinct character in `text`."""
        return cls(set(text))

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1  # + <unk>

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, hash={self.hash[:12]})"

    @property
    def hash(self) -> str:
        """SHA-256 of the vocabulary (type, unk token and characters, in id order)."""
        blob = json.dumps([self.type, self.unk_token, self.chars], ensure_ascii=True).encode()
        return hashlib.sha256(blob).hexdigest()

    # --- encoding ----------------------------------------------------------------------------------------------

    def encode_array(self, text: str) -> np.ndarray:
        """Token ids of `text` as an int64 array (N,); characters outside the vocabulary become `unk_id`."""
        if not text:
            return np.zeros(0, dtype=np.int64)
        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)
        if len(self._points) == 0:
            return np.zeros(len(points), dtype=np.int64)
        pos = np.searchsorted(self._points, points).clip(max=len(self._points) - 1)
        known = self._points[pos] == points
        return np.where(known, pos + 1, self.unk_id).astype(np.int64)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; characters outside the vocabulary become `unk_id` (0)."""
        return self.encode_array(text).tolist()

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """Text of `ids` (a list, array or tensor); `unk_id` decodes to U+FFFD. An id out of range is a ValueError."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        out = []
        for i in ids:
            i = int(i)
            if i == self.unk_id:
                out.append(UNK_TEXT)
            elif 0 < i <= len(self.chars):
                out.append(self.chars[i - 1])
            else:
                raise ValueError(f"token id {i} is outside the vocabulary (0..{len(self.chars)})")
        return "".join(out)

    def count_unknown(self, text: str) -> int:
        """How many characters of `text` encode to `<unk>`."""
        return int((self.encode_array(text) == self.unk_id).sum())

    # --- saving ------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state: {"type": "char", "unk_token": "<unk>", "chars": [...], "hash": ...}."""
        return {"type": self.type, "unk_token": self.unk_token, "chars": list(self.chars), "hash": self.hash}

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
        tok = cls(chars)
        if "hash" in state and state["hash"] != tok.hash:
            raise DataError(f"{source}: 'hash' does not match the vocabulary (edited by hand?)")
        return tok

    def save(self, path: str | Path) -> Path:
        """Write `tokenizer.json` into the folder `path` (or to the file `path` if it ends in .json)."""
        path = _file(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        """Read `tokenizer.json` from the folder `path` (or the .json file `path`)."""
        path = _file(path)
        return cls.from_dict(_read_json(path), source=str(path))


def tokenizer_from_dict(state: dict[str, Any], source: str = "tokenizer") -> CharTokenizer:
    """Any tokenizer from its `to_dict()`, picked by its "type"."""
    kinds = {CharTokenizer.type: CharTokenizer}
    kind = state.get("type") if isinstance(state, dict) else None
    if kind not in kinds:
        raise DataError(f"{source}: unknown tokenizer type {kind!r}; expected one of {', '.join(kinds)}")
    return kinds[kind].from_dict(state, source)


def load_tokenizer(path: str | Path) -> CharTokenizer:
    """Any tokenizer from a `tokenizer.json` (or the folder holding one)."""
    path = _file(path)
    return tokenizer_from_dict(_read_json(path), source=str(path))


def _file(path: str | Path) -> Path:
    path = Path(path)
    return path if path.suffix == ".json" else path / TOKENIZER_FILE


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"{path}: tokenizer file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a valid tokenizer JSON file ({exc})") from None
