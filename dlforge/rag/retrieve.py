"""Questions -> the chunks that answer them: dense, keyword (BM25) or hybrid (the two fused).

    retriever = Retriever.open("docs.db")                 # the store and the embedding model it was built with
    hits = retriever.search("How do I upgrade?", k=5, mode="hybrid", filters=Filters(path="guides/*", types=("md",)))
    hits[0] == {"text": ..., "score": ..., "doc_id": 3, "source": "/abs/guides/upgrade.md", "heading": [...],
                "start": 120, "end": 940, "similarity": 0.71, "chunk_id": 17, "title": ..., "type": "md", ...}

Dense: the question embedded by the index's own model, nearest chunks by cosine similarity. Keyword: BM25 over the
chunk text and its headings. Hybrid: both lists (`candidates` deep each) fused (`fusion`): by default each list's
scores scaled to [0, 1], then dense 1 x its scaled cosine + 0.3 x the scaled BM25, a chunk missing from a list
getting nothing from it; or weighted reciprocal rank fusion. The method and weights are the index's own (`dlforge
rag eval --tune-fusion --save` chooses them on the folder's questions). Every hit carries `similarity`, the
cosine between the question and the chunk, in all modes (the answer step uses it to decide whether the documents hold
an answer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dlforge.errors import ConfigError
from dlforge.rag.embed import RagEmbedder, int8_folder, load_embedder
from dlforge.rag.fusion import Fusion, weighted_rrf
from dlforge.rag.sqlite_store import open_store
from dlforge.rag.store import Filters, Store

MODES = ("hybrid", "dense", "keyword")


def reciprocal_rank_fusion(rankings: list[list[int]], rrf_k: int = 60) -> list[tuple[int, float]]:
    """Equal-weight RRF: [(id, sum of 1 / (rrf_k + rank))], best first; ties keep the order first seen."""
    return weighted_rrf(rankings, None, rrf_k)


def check_search(mode: str, k: int) -> None:
    """ConfigError naming the option unless `mode` is a retrieval mode and `k` at least 1."""
    if mode not in MODES:
        raise ConfigError(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
    if k < 1:
        raise ConfigError(f"--k {k}: expected at least 1")


class Retriever:
    def __init__(self, store: Store, embedder: RagEmbedder, fusion: Fusion | None = None, candidates: int = 50):
        store.check_embedder(embedder.identity())
        self.store, self.embedder = store, embedder
        self.fusion = fusion or Fusion.of(store.settings())
        self.candidates = candidates

    @classmethod
    def open(cls, db: str | Path, model: str | None = None, embedder: RagEmbedder | None = None) -> Retriever:
        """The index at `db` with its embedding model (`model` overrides where to load it from; it must be the same
        model)."""
        store = open_store(db)
        try:
            built = store.settings()["embedder"]
            if embedder is None:
                from dlforge.rag.embed_int8 import with_precision

                embedder = with_precision(load_embedder(model or built["source"]), built.get("precision") or "fp32",
                                          int8_folder(Path(db).expanduser().resolve()))
            return cls(store, embedder)
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def embed_query(self, question: str) -> np.ndarray:
        return self.embedder.embed([question])[0]  # (dim,)

    def search(self, question: str, k: int = 5, mode: str = "hybrid", filters: Filters | None = None,
               exact: bool = False) -> list[dict[str, Any]]:
        """The top-k chunks for `question` as plain records, best first (see the module docstring)."""
        check_search(mode, k)
        query = None if mode == "keyword" else self.embed_query(question)
        if mode == "dense":
            ranked = self.store.search_dense(query, k, filters, exact)
        elif mode == "keyword":
            ranked = self.store.search_keyword(question, k, filters)
        else:
            depth = max(self.candidates, k)
            dense = self.store.search_dense(query, depth, filters, exact)
            keyword = self.store.search_keyword(question, depth, filters)
            ranked = self.fusion.fuse(dense, keyword)[:k]
        records = self.store.records([i for i, _ in ranked])
        scores = dict(ranked)
        for r in records:
            r["score"] = float(scores[r["chunk_id"]])
        if records and mode != "keyword":
            self._similarity(query, records)
        return records

    def similarity(self, question: str, records: list[dict[str, Any]]) -> None:
        """Set `similarity` (question-chunk cosine) on records that lack it, e.g. from a keyword search."""
        todo = [r for r in records if r.get("similarity") is None]
        if todo:
            self._similarity(self.embed_query(question), todo)

    def _similarity(self, query: np.ndarray, records: list[dict[str, Any]]) -> None:
        sims = self.store.vectors([r["chunk_id"] for r in records]) @ query  # (n,)
        for r, s in zip(records, sims.tolist(), strict=True):
            r["similarity"] = round(float(s), 6)
