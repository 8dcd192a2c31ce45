"""WordPiece for BERT on the `tokenizers` library: trained on a corpus, or loaded from a tokenizer.json / vocab.txt.

    tok = WordPieceTokenizer.train(texts, vocab_size=8000)    # BERT's uncased pipeline
    tok = resolve_tokenizer("minilm")                          # all-MiniLM-L6-v2's tokenizer.json
    tok = resolve_tokenizer("latest:bert-shakespeare-mlm")     # the one a run trained (its preprocessing.json)
    tok.encode_batch(["To be, or not to be"])                  # ids without [CLS]/[SEP]; the caller adds them

Interim: the project's common tokenizer interface (`encode`, `encode_batch`, `decode`, `vocab_size`, `hash`, the
special ids, `to_dict`/`from_dict`, `save`/`load`) is what BERT's code calls, so this module gives way to the shared
WordPiece tokenizer of `dlforge.llm` without changes elsewhere.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dlforge.errors import DataError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class WordPieceTokenizer:
    """A `tokenizers.Tokenizer` with a WordPiece model and BERT's special tokens."""

    type = "wordpiece"

    def __init__(self, tokenizer: Any, source: str = "tokenizer"):
        tokenizer.no_padding()  # a tokenizer.json may pad or cut (MiniLM's pads to 128): the caller decides both
        tokenizer.no_truncation()
        self.tok = tokenizer
        ids = {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise DataError(f"{source}: the vocabulary lacks {', '.join(missing)}; a BERT tokenizer needs "
                            f"{', '.join(SPECIAL_TOKENS)}")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (ids[t] for t in SPECIAL_TOKENS)
        self.special_ids = tuple(ids.values())

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, lowercase: bool = True,
              min_frequency: int = 2) -> WordPieceTokenizer:
        """BERT's pipeline (normalize: clean, CJK spacing, lowercase + strip accents; split on whitespace and
        punctuation; WordPiece with ## continuations), with a vocabulary learnt from `texts`."""
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

        tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=list(SPECIAL_TOKENS), show_progress=False)
        tok.train_from_iterator(list(texts), trainer)
        return cls(tok, source="trained tokenizer")

    @classmethod
    def load(cls, path: str | Path) -> WordPieceTokenizer:
        """A `tokenizer.json`, or a folder holding one, or a folder with only a BERT `vocab.txt`."""
        from tokenizers import Tokenizer
        from tokenizers.implementations import BertWordPieceTokenizer

        path = Path(path)
        file = path if path.suffix == ".json" else path / "tokenizer.json"
        try:
            if file.is_file():
                return cls(Tokenizer.from_file(str(file)), source=str(file))
            if (path / "vocab.txt").is_file():
                lower = _read_json(path / "tokenizer_config.json").get("do_lower_case", True)
                bert = BertWordPieceTokenizer(str(path / "vocab.txt"), lowercase=lower, strip_accents=None)
                return cls(bert._tokenizer, source=str(path / "vocab.txt"))
        except Exception as exc:  # the Rust side raises plain Exceptions for malformed files
            raise DataError(f"{path}: not a readable WordPiece tokenizer ({exc})") from None
        raise DataError(f"{path}: no tokenizer.json or vocab.txt")

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    @property
    def hash(self) -> str:
        """SHA-256 of the tokenizer's whole definition (normalizer, pre-tokenizer, vocabulary), canonical JSON."""
        blob = json.dumps(json.loads(self.tok.to_str()), sort_keys=True, ensure_ascii=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def __repr__(self) -> str:
        return f"WordPieceTokenizer(vocab_size={self.vocab_size}, hash={self.hash[:12]})"

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without special tokens."""
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text (in parallel), without special tokens."""
        return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        return self.tok.decode(list(ids), skip_special_tokens=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state: {"type": "wordpiece", "tokenizer": <the tokenizer.json content>, "hash": ...}."""
        return {"type": self.type, "tokenizer": json.loads(self.tok.to_str()), "hash": self.hash}

    @classmethod
    def from_dict(cls, state: dict[str, Any], source: str = "tokenizer") -> WordPieceTokenizer:
        from tokenizers import Tokenizer

        if not isinstance(state, dict) or state.get("type") != cls.type or not isinstance(state.get("tokenizer"), dict):
            raise DataError(f"{source}: expected a tokenizer of type 'wordpiece' with its 'tokenizer' definition")
        try:
            tok = cls(Tokenizer.from_str(json.dumps(state["tokenizer"])), source=source)
        except Exception as exc:
            raise DataError(f"{source}: not a valid tokenizer definition ({exc})") from None
        if "hash" in state and state["hash"] != tok.hash:
            raise DataError(f"{source}: 'hash' does not match the tokenizer (edited by hand?)")
        return tok

    def save(self, path: str | Path) -> Path:
        """Write `tokenizer.json` (the `tokenizers` format) into the folder `path`, or to `path` if it ends in .json."""
        path = Path(path)
        file = path if path.suffix == ".json" else path / "tokenizer.json"
        file.parent.mkdir(parents=True, exist_ok=True)
        self.tok.save(str(file))
        return file


def resolve_tokenizer(ref: str | Path, runs_dir: str | Path = "runs") -> WordPieceTokenizer:
    """`minilm`; a tokenizer.json or a folder with one (or a vocab.txt); or a dlforge run / model folder, whose
    preprocessing.json holds the tokenizer it was trained with."""
    from dlforge.llm.bert_weights import MINILM, minilm_path

    if str(ref) == MINILM:
        return WordPieceTokenizer.load(minilm_path())
    path = Path(ref)
    if path.suffix == ".json" or (path / "tokenizer.json").is_file() or (path / "vocab.txt").is_file():
        return WordPieceTokenizer.load(path)
    from dlforge.runs.rundir import resolve_run
    from dlforge.train.checkpoint import read_model_json

    model_dir = path if (path / "manifest.json").is_file() else resolve_run(str(ref), runs_dir) / "model"
    pre = read_model_json(model_dir, "preprocessing.json")
    if not isinstance(pre, dict) or "tokenizer" not in pre:
        raise DataError(f"{model_dir}: its preprocessing.json holds no tokenizer (not a text model)")
    return WordPieceTokenizer.from_dict(pre["tokenizer"], source=f"{model_dir}/preprocessing.json")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: invalid JSON ({exc})") from None
    return data if isinstance(data, dict) else {}
