"""The approximate nearest-neighbour index: usearch HNSW over L2-normalised float32 vectors, inner product.

    index = VectorIndex(dim=384)
    index.add(ids, vectors)                 # ids (N,) int64 chunk ids, vectors (N, 384) float32
    ids, scores = index.search(query, k)    # query (384,); scores are cosine similarities, best first
    index.search(query, k, exact=True)      # brute force over the same vectors (recall 1)
    data = index.to_bytes(); VectorIndex.from_bytes(data, dim=384)

HNSW (Malkov & Yashunin 2018): `connectivity` is M, the links per node; `expansion_add` is efConstruction and
`expansion_search` is ef, the candidate list of a query: larger is slower and more accurate (bench/vector_search.py
measures the trade-off). `dtype` is how the index stores vectors: "f32" (default, exact scores), or "f16" / "bf16"
(half the memory, faster search, scores rounded to about 3 significant digits; the store keeps float32 copies).
usearch reports the distance 1 - <q, v>; scores here are <q, v>, the cosine similarity of normalised vectors. The
index lives in memory; the store saves it beside its database (see `sqlite_store`).
"""

from __future__ import annotations

import numpy as np

from dlforge.errors import DataError

DEFAULTS = {"connectivity": 16, "expansion_add": 128, "expansion_search": 64, "dtype": "f32"}
DTYPES = ("f32", "f16", "bf16")


def _usearch():
    try:
        from usearch.index import Index
    except ImportError as exc:
        raise DataError("the vector index needs usearch: pip install 'dlforge[rag]'") from exc
    return Index


class VectorIndex:
    def __init__(self, dim: int, connectivity: int = 16, expansion_add: int = 128, expansion_search: int = 64,
                 dtype: str = "f32"):
        if dtype not in DTYPES:
            raise DataError(f"vector index dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
        self.dim = dim
        self.settings = {"connectivity": connectivity, "expansion_add": expansion_add,
                         "expansion_search": expansion_search, "dtype": dtype}
        self.index = _usearch()(ndim=dim, metric="ip", dtype=dtype, connectivity=connectivity,
                                expansion_add=expansion_add, expansion_search=expansion_search)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def ef(self) -> int:
        return self.index.expansion_search

    @ef.setter
    def ef(self, value: int) -> None:
        self.index.expansion_search = int(value)

    def add(self, ids: np.ndarray, vectors: np.ndarray, threads: int = 0) -> None:
        if len(ids):
            self.index.add(np.asarray(ids, dtype=np.uint64), np.ascontiguousarray(vectors, dtype=np.float32),
                           threads=threads)

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self.index.remove(np.asarray(ids, dtype=np.uint64))

    def search(self, query: np.ndarray, k: int, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of one query (dim,): chunk ids (k',) int64 and cosine scores (k',) float32, best first."""
        if len(self.index) == 0 or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        matches = self.index.search(np.ascontiguousarray(query, dtype=np.float32), min(k, len(self.index)),
                                    exact=exact)
        return matches.keys.astype(np.int64), (1.0 - matches.distances).astype(np.float32)

    def search_batch(self, queries: np.ndarray, k: int, exact: bool = False, threads: int = 0) -> np.ndarray:
        """Top-k ids of many queries (B, dim) -> (B, k) int64 (the benchmark's batch mode)."""
        matches = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k, exact=exact, threads=threads)
        return matches.keys.astype(np.int64)

    def to_bytes(self) -> bytes:
        return bytes(self.index.save())

    @classmethod
    def from_bytes(cls, data: bytes, dim: int, **settings: int | str) -> VectorIndex:
        """Raises DataError when `data` is not a usearch index of `dim` dimensions."""
        index = cls(dim, **settings)
        try:
            index.index.load(data)
        except (RuntimeError, ValueError) as exc:
            raise DataError(f"unreadable vector index ({exc})") from exc
        if index.index.ndim != dim:
            raise DataError(f"vector index has {index.index.ndim} dimensions, expected {dim}")
        index.ef = settings.get("expansion_search", DEFAULTS["expansion_search"])
        return index
