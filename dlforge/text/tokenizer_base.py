"""What every dlforge tokenizer shares: special-token roles, the chat template, the hash, and the folder on disk.

A tokenizer folder holds two files:

    tokenizer.json          the vocabulary: the Hugging Face `tokenizers` format for BPE / WordPiece (transformers and
                            tokenizers read it as is), dlforge's own JSON for the character tokenizer
    tokenizer_config.json   transformers-style keys (eos_token, pad_token, ..., chat_template) plus a "dlforge" section:
                            {"format": "dlforge-tokenizer", "version": 1, "type": "bpe", "hash": "<sha256>"}

The hash is the SHA-256 of a canonical serialization (the vocabulary and pipeline, the special-token roles and the
chat template; not runtime settings such as padding), so two tokenizers with equal hashes encode alike. A model
records the hash of the tokenizer it was trained with; `check_tokenizer` refuses any other.
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
CONFIG_FILE = "tokenizer_config.json"
FORMAT = "dlforge-tokenizer"
VERSION = 1
# The roles a special token can play, and the conventional spellings that give a token its role when none is named.
ROLES = ("eos", "bos", "pad", "unk", "cls", "sep", "mask")
CONVENTIONAL = {
    "eos": ("<|endoftext|>", "</s>", "<eos>", "<|eos|>"),
    "bos": ("<s>", "<bos>", "<|startoftext|>"),
    "pad": ("[PAD]", "<pad>", "<|pad|>"),
    "unk": ("[UNK]", "<unk>", "<|unk|>"),
    "cls": ("[CLS]", "<cls>"),
    "sep": ("[SEP]", "<sep>"),
    "mask": ("[MASK]", "<mask>"),
}


def roles_from_names(tokens: Iterable[str]) -> dict[str, str]:
    """{role: token} for the tokens spelled as one of the conventional names of a role (first match wins)."""
    tokens = list(tokens)
    roles = {}
    for role, names in CONVENTIONAL.items():
        found = [t for t in tokens if t in names]
        if found:
            roles[role] = found[0]
    return roles


class Tokenizer:
    """The interface every tokenizer has (CharTokenizer, SubwordTokenizer).

    encode(text) -> list[int]; encode_array(text) -> int64 array; encode_batch(texts); decode(ids) -> str;
    decode_stream() for token-by-token decoding; vocab_size; hash; to_dict() / from_dict(); save(dir) / load(dir);
    special-token ids `eos_id`, `bos_id`, `pad_id`, `unk_id`, `cls_id`, `sep_id`, `mask_id` (None when absent);
    `chat_template` (a Jinja string or None), saved and hashed with the tokenizer.
    """

    type = "base"
    special_tokens: dict[str, str]  # role -> token text
    chat_template: str | None

    # --- subclasses provide these --------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def token_to_id(self, token: str) -> int | None:
        raise NotImplementedError

    def id_to_token(self, i: int) -> str | None:
        raise NotImplementedError

    def encode_array(self, text: str, add_special_tokens: bool = False) -> np.ndarray:
        raise NotImplementedError

    def decode(self, ids: Iterable[int] | np.ndarray, skip_special_tokens: bool = False) -> str:
        raise NotImplementedError

    def decode_stream(self) -> Any:
        """An object whose `step(id) -> str` returns the text that token adds (possibly "" until it is complete)."""
        raise NotImplementedError

    def canonical(self) -> Any:
        """A JSON-able form of everything that decides how text is encoded (hashed with roles and chat template)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def tokenizer_json(self) -> dict[str, Any]:
        """The content of tokenizer.json."""
        raise NotImplementedError

    # --- shared --------------------------------------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`. `add_special_tokens`: the tokenizer's template around it (e.g. [CLS] ... [SEP])."""
        return self.encode_array(text, add_special_tokens).tolist()

    def encode_batch(self, texts: Iterable[str], add_special_tokens: bool = False) -> list[list[int]]:
        """`encode` of each text."""
        return [self.encode(t, add_special_tokens) for t in texts]

    def tokens(self, ids: Iterable[int]) -> list[str]:
        """The vocabulary entry of each id (for display)."""
        return [self.id_to_token(int(i)) or "" for i in ids]

    def count_unknown(self, text: str) -> int:
        """How many tokens of `text` are the unknown token (0 when the tokenizer has none)."""
        if self.unk_id is None:
            return 0
        return int((self.encode_array(text) == self.unk_id).sum())

    def _role_id(self, role: str) -> int | None:
        token = self.special_tokens.get(role)
        return None if token is None else self.token_to_id(token)

    @property
    def eos_id(self) -> int | None:
        return self._role_id("eos")

    @property
    def bos_id(self) -> int | None:
        return self._role_id("bos")

    @property
    def pad_id(self) -> int | None:
        return self._role_id("pad")

    @property
    def unk_id(self) -> int | None:
        return self._role_id("unk")

    @property
    def cls_id(self) -> int | None:
        return self._role_id("cls")

    @property
    def sep_id(self) -> int | None:
        return self._role_id("sep")

    @property
    def mask_id(self) -> int | None:
        return self._role_id("mask")

    @property
    def hash(self) -> str:
        """SHA-256 of the canonical serialization: vocabulary and pipeline, special-token roles, chat template."""
        blob = [self.type, self.canonical(), dict(sorted(self.special_tokens.items()))]
        if self.chat_template is not None:
            blob.append(self.chat_template)
        text = json.dumps(blob, ensure_ascii=True, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"{type(self).__name__}(type={self.type!r}, vocab_size={self.vocab_size}, hash={self.hash[:12]})"

    def check_roles(self, source: str) -> None:
        """Every special token named for a role must be in the vocabulary."""
        for role, token in self.special_tokens.items():
            if role not in ROLES:
                raise DataError(f"{source}: unknown special-token role {role!r}; expected one of {', '.join(ROLES)}")
            if self.token_to_id(token) is None:
                raise DataError(f"{source}: the {role} token {token!r} is not in the vocabulary")

    # --- the folder on disk ----------------------------------------------------------------------------------------

    def config_json(self) -> dict[str, Any]:
        """The content of tokenizer_config.json: transformers' keys and dlforge's section."""
        config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False}
        config.update({f"{role}_token": token for role, token in sorted(self.special_tokens.items())})
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        config["dlforge"] = {"format": FORMAT, "version": VERSION, "type": self.type, "hash": self.hash,
                             "special_tokens": dict(sorted(self.special_tokens.items()))}
        return config

    def files(self) -> dict[str, dict[str, Any]]:
        """{file name: JSON content} of the tokenizer folder (for a model folder's extra files)."""
        return {TOKENIZER_FILE: self.tokenizer_json(), CONFIG_FILE: self.config_json()}

    def transformers_json(self) -> dict[str, Any]:
        """tokenizer.json as transformers' AutoTokenizer reads it: the tokenizers-format file itself, for a subword
        tokenizer."""
        return self.tokenizer_json()

    def transformers_files(self) -> dict[str, dict[str, Any]]:
        """{file name: JSON content} of the tokenizer in a folder for transformers (an exported model): AutoTokenizer
        loads it, and `load_tokenizer` reads it back as this tokenizer, hash and all."""
        return {TOKENIZER_FILE: self.transformers_json(), CONFIG_FILE: self.config_json()}

    def save(self, path: str | Path) -> Path:
        """Write tokenizer.json and tokenizer_config.json into the folder `path` (created if needed); returns the
        tokenizer.json path. Each file is replaced atomically."""
        from dlforge.runs.rundir import atomic_write_text

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in self.files().items():
            atomic_write_text(folder / name, json.dumps(content, ensure_ascii=False, indent=1) + "\n")
        return folder / TOKENIZER_FILE


def read_json(path: Path, what: str = "tokenizer file") -> Any:
    """Parsed JSON of `path`; a missing or damaged file is a DataError naming it."""
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a valid JSON file ({exc})") from None


class TokenIdError(DataError, ValueError):
    """A token id outside the vocabulary."""


def ids_list(ids: Iterable[int] | np.ndarray, vocab_size: int) -> list[int]:
    """`ids` (a list, array or tensor) as a list of ints, each checked to be inside the vocabulary."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    out = [int(i) for i in ids]
    for i in out:
        if not 0 <= i < vocab_size:
            raise TokenIdError(f"token id {i} is outside the vocabulary (0..{vocab_size - 1})")
    return out
