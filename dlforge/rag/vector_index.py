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

Small indexes are searched exactly: up to `EXACT_BELOW` vectors a float32 matrix product over all of them (kept in
memory beside the graph) is as fast as the graph at recall@10 0.99 and always right, so `search` uses it there
(`bench/vector_search.py --crossover`, MiniLM embeddings, one thread, AMD EPYC AVX2: at 5,000 vectors 0.16 ms exact
against 0.20 ms for the graph at recall@10 0.99 and 0.13 ms at 0.95; usearch's own brute force took 0.60 ms).
`calibrate` picks the smallest ef reaching a target recall@k on made-up questions near stored vectors, their exact
neighbours as the truth.
"""

from __future__ import annotations

import numpy as np

from dlforge.errors import DataError

DEFAULTS = {"connectivity": 16, "expansion_add": 128, "expansion_search": 64, "dtype": "f32"}
DTYPES = ("f32", "f16", "bf16")
EXACT_BELOW = 5000  # indexes of at most this many vectors are searched exactly (the crossover measured above)
EF_MAX = 4096  # calibration gives up doubling ef here


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
        self._matrix: tuple[np.ndarray, np.ndarray] | None = None  # (keys (N,), vectors (N, dim)) for exact search

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
            self._matrix = None
            self.index.add(np.asarray(ids, dtype=np.uint64), np.ascontiguousarray(vectors, dtype=np.float32),
                           threads=threads)

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self._matrix = None
            self.index.remove(np.asarray(ids, dtype=np.uint64))

    def search(self, query: np.ndarray, k: int, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of one query (dim,): chunk ids (k',) int64 and cosine scores (k',) float32, best first. Exact
        when asked or when the index holds at most EXACT_BELOW vectors."""
        n = len(self.index)
        if n == 0 or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        k = min(k, n)
        if n <= EXACT_BELOW:
            return self._search_matrix(np.asarray(query, dtype=np.float32), k)
        matches = self.index.search(np.ascontiguousarray(query, dtype=np.float32), k, exact=exact)
        return matches.keys.astype(np.int64), 1.0 - matches.distances

    def _search_matrix(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Brute force by a matrix product over an in-memory float32 copy of the vectors (as stored: rounded for
        f16 / bf16 indexes, like the graph's scores)."""
        if self._matrix is None:
            keys = np.asarray(self.index.keys, dtype=np.uint64)
            self._matrix = keys.astype(np.int64), np.stack(self.index.get(keys, dtype=np.float32))
        keys, vectors = self._matrix
        scores = vectors @ query  # (N,)
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return keys[top], scores[top]

    def search_batch(self, queries: np.ndarray, k: int, exact: bool = False, threads: int = 0) -> np.ndarray:
        """Top-k ids of many queries (B, dim) -> (B, k) int64 (the benchmark's batch mode)."""
        matches = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k, exact=exact, threads=threads)
        return matches.keys.astype(np.int64)

    def calibrate(self, target: float, k: int = 10, sample: int = 500, seed: int = 0) -> tuple[int, float]:
        """The smallest ef whose graph search reaches recall@k >= `target` (the truth: exact top-k), and the recall
        it reached, on `sample` made-up questions. A stored vector is no stand-in for a new question: the graph links
        it to its neighbours at build time, so it needs far less ef (MiniLM embeddings, 100k: ef 17 for recall 0.95
        where held-out questions need 56). Each question is therefore a stored vector moved, in a random direction,
        as far as that vector is from its nearest other vector (their similarity: median 0.68, as for held-out
        questions' best match), which errs on the safe side: ef 72 for 0.95 and 288 for 0.99, where held-out
        questions need 56 and 192 (bench/vector_search.py). Doubling from 16, then bisection to within 1/16 of the
        bracket, capped at EF_MAX (the recall returned may then fall short); the index's ef is left as it was."""
        if len(self.index) < 2:
            return self.ef, 1.0
        rng = np.random.default_rng(seed)
        keys = np.asarray(self.index.keys, dtype=np.uint64)
        keys = rng.choice(keys, min(sample, len(keys)), replace=False)
        stored = np.stack(self.index.get(keys, dtype=np.float32))  # (S, dim)
        cos = np.clip(1.0 - self.index.search(stored, 2, exact=True).distances[:, 1:2], -1.0, 1.0)  # (S, 1)
        away = rng.standard_normal(stored.shape).astype(np.float32)
        away -= (away * stored).sum(1, keepdims=True) * stored  # orthogonal to the stored vector
        away /= np.linalg.norm(away, axis=1, keepdims=True)
        queries = np.ascontiguousarray(stored * cos + away * np.sqrt(1.0 - cos**2), dtype=np.float32)
        count = min(k, len(self.index))
        truth = [set(row.tolist()) for row in self.index.search(queries, count, exact=True).keys]
        before = self.ef

        def measure(ef: int) -> float:
            self.ef = ef
            found = self.index.search(queries, count).keys
            return float(np.mean([len(set(f.tolist()) & t) / count for f, t in zip(found, truth, strict=True)]))

        try:
            lo, hi = 8, 16
            while measure(hi) < target and hi < EF_MAX:
                lo, hi = hi, min(hi * 2, EF_MAX)
            while hi - lo > max(1, hi // 16):
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if measure(mid) >= target else (mid, hi)
            return hi, measure(hi)
        finally:
            self.ef = before

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
