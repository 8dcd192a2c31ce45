"""The vector database behind RAG, as a small interface: documents and chunks in, dense and keyword search out.

    store = open_store("docs.db")                       # the embedded default: SQLite + FTS5 + usearch HNSW
    store.write([(doc, chunks, vectors)], delete=[])    # one transaction: a document and all its chunks, or nothing
    store.search_dense(query_vector, k=10, filters=Filters(path="*.md"))   # [(chunk_id, cosine)]
    store.search_keyword("how do I upgrade?", k=10)     # [(chunk_id, bm25)], the question escaped by the backend
    store.records([ids...])                             # plain dicts: text, doc_id, source, heading, start, end...

A backend implements `Store`; `SQLiteStore` (sqlite_store.py) is the one that ships. Another backend, for example
PostgreSQL with pgvector or a Qdrant server, implements the same methods (docs/guides/rag.md shows how), and ingestion,
retrieval, answering and evaluation work unchanged. A backend keeps, next to the chunks, the settings the index was
built with (`settings()`: the embedding model's identity, the chunk sizes) so that an index is never searched with
vectors of another model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlforge.errors import ConfigError, DataError
from dlforge.rag.readers import TYPES

# English stop words: dropped from keyword queries (and from the extractive answerer's word overlap)
STOPWORDS = frozenset(
    "a an and are as at be but by can could did do does for from had has have how i if in into is it its me my no "
    "not of on or our so such than that the their them then there these they this to was we were what when where "
    "which who whom why will with would you your".split())


class NoIndexError(DataError):
    """There is no index at the path given (nothing there, or an empty database)."""


@dataclass
class DocumentRecord:
    path: str  # absolute: the document's key
    relpath: str  # relative to the folder it was indexed from
    type: str  # "md", "html", "pdf"...
    title: str
    sha256: str
    size: int
    mtime: float
    text: str  # the text that chunk offsets point into


@dataclass
class ChunkRecord:
    text: str
    heading: tuple[str, ...]
    start: int
    end: int
    tokens: int
    meta: dict[str, Any] | None = None


@dataclass
class Filters:
    """Metadata filters. `path`: a glob (`*` also crosses "/") matched against the path relative to the indexed
    folder or the absolute path; `types`: file types such as ("md", "pdf")."""

    path: str | None = None
    types: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        known = sorted(set(TYPES.values()))
        for kind in self.types or ():
            if kind not in known:
                raise ConfigError(f"--type {kind}: expected one of {', '.join(known)} (the types an index holds)")

    def __bool__(self) -> bool:
        return bool(self.path or self.types)


class Store(ABC):
    """A document/chunk store with dense (cosine) and keyword (BM25) search. Chunk ids are integers that are
    never reused, so an id found by one search can be looked up in the records."""

    path: Path

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """What the index was built with: {"embedder": {...}, "chunking": {...}, ...}."""

    @abstractmethod
    def update_settings(self, key: str, value: Any) -> None:
        """Record a setting chosen after the build (e.g. the hybrid fusion weights) in one transaction; the ones
        that define the index's vectors (embedder, chunking, ann) are fixed."""

    @abstractmethod
    def documents(self, under: str | None = None) -> dict[str, str]:
        """Path -> content sha256 of the documents, all or those under a folder (an absolute path)."""

    @abstractmethod
    def write(self, upserts: list[tuple[DocumentRecord, list[ChunkRecord], np.ndarray]], delete: list[str]
              ) -> tuple[int, int]:
        """In one transaction: delete documents by path, and replace each upserted document and its chunks (vectors
        (n_chunks, dim) float32, L2-normalised). Returns (chunks added, chunks removed)."""

    @abstractmethod
    def search_dense(self, vector: np.ndarray, k: int, filters: Filters | None = None, exact: bool = False
                     ) -> list[tuple[int, float]]:
        """The k chunks nearest to `vector` (dim,), best first, as (chunk id, cosine similarity)."""

    @abstractmethod
    def search_keyword(self, question: str, k: int, filters: Filters | None = None) -> list[tuple[int, float]]:
        """The k chunks that best match the words of `question` (BM25, higher is better). Any text is accepted: the
        backend escapes its own query syntax."""

    @abstractmethod
    def chunk_ids(self) -> list[int]:
        """Every chunk's id, document by document in reading order."""

    @abstractmethod
    def records(self, ids: list[int]) -> list[dict[str, Any]]:
        """Chunk records in the order of `ids`: chunk_id, text, doc_id, source, relpath, title, type, heading (list),
        start, end, tokens, meta."""

    @abstractmethod
    def vectors(self, ids: list[int]) -> np.ndarray:
        """The stored vectors of the chunks `ids`, (len(ids), dim) float32."""

    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """Counts and sizes for `dlforge rag stats`."""

    @abstractmethod
    def flush(self) -> None:
        """Make everything written so far durable, derived indexes included (called at the end of ingestion)."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release the store."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_embedder(self, identity: dict[str, Any]) -> None:
        """Refuse to use this index with another embedding model than the one it was built with."""
        built = self.settings().get("embedder") or {}
        if (built.get("dim"), built.get("fingerprint")) != (identity.get("dim"), identity.get("fingerprint")):
            def show(e: dict[str, Any]) -> str:
                return f"{e.get('name')!r} ({e.get('dim')}-d, fingerprint {str(e.get('fingerprint'))[:12]})"

            raise DataError(f"{self.path}: the index was built with the embedding model {show(built)}, not "
                            f"{show(identity)}; their vectors are not comparable: use --model "
                            f"{built.get('source')!r} or index into a new --db")
