"""Vector search: dlforge's RAG store (SQLite + usearch HNSW) against faiss-cpu's exact IndexFlatIP and its
IndexHNSWFlat, on the same vectors in the same process.

Data: `--n` random 384-d vectors (default 100,000) and `--queries` queries (1,000), Gaussian then L2-normalised;
exact top-10 ground truth by brute force. Random high-dimensional vectors are the hard case for HNSW (real
embeddings cluster), so the ef needed here is an upper bound for real text.

Each HNSW side is tuned: the smallest ef (efSearch) whose recall@10 is >= `--recall` (0.95), found by doubling from
16 and then bisecting to within 1/16 of the bracket; both graphs use M=16 and efConstruction=128. The dlforge side is
`SQLiteStore.search_dense(query, 10)`, the call `dlforge rag ask` makes; faiss is called with one query at a time as
well (a RAG query is one question), with one OpenMP thread: faiss parallelises over the queries of a batch, so a
single query gains nothing from more threads (usearch also searches one query on one thread).
Paired, interleaved rounds (the order alternating) of all queries; prints queries/s and the median ratio
dlforge/faiss with its min and max (above 1: dlforge is faster).

    python bench/vector_search.py [--n 100000] [--queries 1000] [--rounds 10] [--recall 0.95] [--dtype f32]
                                  [--exact-only] [--json] [--quick]

The store's exact search (`search_dense(..., exact=True)`, recall 1) is always timed against faiss's flat index too;
`--exact-only` skips the graphs (their tuning at high recall is most of the run's time).

`--dtype bf16` (or f16) stores dlforge's HNSW vectors in 16 bits: less memory traffic per distance, about the same
recall on normalised vectors; faiss's IndexHNSWFlat stays float32, so that run compares different precisions.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dlforge.rag.sqlite_store import SQLiteStore
from dlforge.rag.store import ChunkRecord, DocumentRecord

sys.path.insert(0, str(Path(__file__).parent))
from paired import paired_rounds, summary  # noqa: E402

DIM, K, M, EF_ADD = 384, 10, 16, 128
EF_MAX = 4096


def unit(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM), dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def ground_truth(base: np.ndarray, queries: np.ndarray) -> np.ndarray:
    out = np.empty((len(queries), K), np.int64)
    for i in range(0, len(queries), 100):
        scores = queries[i:i + 100] @ base.T  # (100, n)
        top = np.argpartition(-scores, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[i:i + 100] = np.take_along_axis(top, order, axis=1)
    return out


def recall(found: list[np.ndarray], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / K for f, t in zip(found, truth, strict=True)]))


def build_store(folder: Path, base: np.ndarray, dtype: str) -> tuple[SQLiteStore, np.ndarray, float]:
    """The dlforge store holding `base` as chunks (1,000 per document); returns it, row i's chunk id, build seconds."""
    settings = {"embedder": {"name": "random", "source": "random", "dim": DIM, "fingerprint": "0"},
                "chunking": {"max_tokens": 1, "overlap": 0},
                "ann": {"connectivity": M, "expansion_add": EF_ADD, "dtype": dtype}}
    store = SQLiteStore(folder / "bench.db", create=settings, writer=True)
    t0 = time.perf_counter()
    for d in range(0, len(base), 1000):
        part = base[d:d + 1000]
        doc = DocumentRecord(f"/bench/{d}", str(d), "txt", "", str(d), 0, 0.0, "")
        store.write([(doc, [ChunkRecord("", (), 0, 0, 0)] * len(part), part)], [])
    seconds = time.perf_counter() - t0
    ids = np.array([r[0] for r in store.db.execute("SELECT id FROM chunks ORDER BY doc_id, ord")])
    return store, ids, seconds


def graphs(args, store, base, queries, truth, ours, faiss_search, timed, flat, build_dlforge) -> dict:
    """Both HNSW graphs tuned to the target recall, then timed against each other and against faiss flat."""
    import faiss

    t0 = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(DIM, M, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = EF_ADD
    hnsw.add(base)
    build_faiss = time.perf_counter() - t0

    def tune(set_ef, search) -> tuple[int, float]:
        """The smallest ef reaching the target recall: doubling, then bisection (recall grows with ef)."""
        def measure(ef: int) -> float:
            set_ef(ef)
            return recall(search(), truth)

        lo, hi = 8, 16
        while measure(hi) < args.recall and hi < EF_MAX:
            lo, hi = hi, hi * 2
        while hi - lo > max(1, hi // 16):
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if measure(mid) >= args.recall else (mid, hi)
        return hi, measure(hi)

    ef_ours, recall_ours = tune(lambda ef: setattr(store.ann, "ef", ef), ours)
    ef_faiss, recall_faiss = tune(lambda ef: setattr(hnsw.hnsw, "efSearch", ef), lambda: faiss_search(hnsw))

    vs_hnsw = summary(*paired_rounds(timed(ours), timed(lambda: faiss_search(hnsw)), args.rounds), args.queries)
    vs_flat = summary(*paired_rounds(timed(ours), timed(lambda: faiss_search(flat)), args.rounds), args.queries)
    return {
        "dlforge": {"dtype": args.dtype, "ef": ef_ours, "recall@10": round(recall_ours, 4),
                    "build_s": round(build_dlforge, 2), "qps": round(vs_hnsw["samples_per_s_dlforge"], 1)},
        "faiss_hnsw": {"ef": ef_faiss, "recall@10": round(recall_faiss, 4), "build_s": round(build_faiss, 2),
                       "qps": round(vs_hnsw["samples_per_s_baseline"], 1)},
        "ratio_vs_faiss_hnsw": {k: round(vs_hnsw[k], 3) for k in ("ratio_median", "ratio_min", "ratio_max")},
        "ratio_vs_faiss_flat": {k: round(vs_flat[k], 3) for k in ("ratio_median", "ratio_min", "ratio_max")},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--recall", type=float, default=0.95)
    ap.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16"],
                    help="how dlforge's HNSW index stores vectors (faiss IndexHNSWFlat: float32)")
    ap.add_argument("--exact-only", action="store_true",
                    help="only the exact searches: the store's exact=True against faiss's IndexFlatIP (no graphs)")
    ap.add_argument("--quick", action="store_true", help="smoke check: 10,000 vectors, 100 queries, 2 rounds")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.n, args.queries, args.rounds = 10_000, 100, 2
    try:
        import faiss
    except ImportError:
        sys.exit("this benchmark needs faiss-cpu: pip install 'dlforge[bench]'")
    faiss.omp_set_num_threads(1)

    base, queries = unit(args.n, 0), unit(args.queries, 1)
    truth = ground_truth(base, queries)
    with tempfile.TemporaryDirectory() as tmp:
        store, ids, build_dlforge = build_store(Path(tmp), base, args.dtype)
        row_of = {int(c): i for i, c in enumerate(ids)}
        flat = faiss.IndexFlatIP(DIM)
        flat.add(base)
        def ours(exact: bool = False) -> list[np.ndarray]:
            return [np.array([row_of[c] for c, _ in store.search_dense(q, K, exact=exact)]) for q in queries]

        def faiss_search(index) -> list[np.ndarray]:
            return [index.search(q[None], K)[1][0] for q in queries]

        def timed(search):
            def run(_round: int) -> float:
                t0 = time.perf_counter()
                search()
                return time.perf_counter() - t0
            return run

        recall_exact = recall(ours(exact=True), truth)
        vs_exact = summary(*paired_rounds(timed(lambda: ours(exact=True)), timed(lambda: faiss_search(flat)),
                                          args.rounds), args.queries)
        result = {"n": args.n, "queries": args.queries, "dim": DIM, "rounds": args.rounds,
                  "target_recall@10": args.recall,
                  "dlforge_exact": {"recall@10": round(recall_exact, 4),
                                    "qps": round(vs_exact["samples_per_s_dlforge"], 1)},
                  "faiss_flat": {"recall@10": 1.0, "qps": round(vs_exact["samples_per_s_baseline"], 1)},
                  "ratio_exact_vs_faiss_flat": {k: round(vs_exact[k], 3)
                                                for k in ("ratio_median", "ratio_min", "ratio_max")}}
        if not args.exact_only:
            result.update(graphs(args, store, base, queries, truth, ours, faiss_search, timed, flat, build_dlforge))
        store.close()

    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.n} x {DIM}-d random unit vectors, {args.queries} queries one at a time, {args.rounds} paired rounds")
    for name in ("dlforge", "faiss_hnsw", "dlforge_exact", "faiss_flat"):
        r = result.get(name)
        if r is None:
            continue
        ef = f"ef {r['ef']:>4}" if "ef" in r else "exact  "
        build = f"build {r['build_s']:.1f} s" if "build_s" in r else ""
        print(f"  {name:13s} {ef}  recall@10 {r['recall@10']:.3f}  {r['qps']:>9.1f} queries/s  {build}")
    for key, label in (("ratio_vs_faiss_hnsw", "dlforge / faiss_hnsw"), ("ratio_vs_faiss_flat", "dlforge / faiss_flat"),
                       ("ratio_exact_vs_faiss_flat", "dlforge exact / faiss_flat")):
        if key in result:
            r = result[key]
            print(f"  {label}: {r['ratio_median']:.2f} (min {r['ratio_min']:.2f}, max {r['ratio_max']:.2f})")

if __name__ == "__main__":
    main()
