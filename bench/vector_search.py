"""Vector search: dlforge's RAG store (SQLite + usearch HNSW) against faiss-cpu (IndexHNSWFlat and the exact
IndexFlatIP) and hnswlib, on the same vectors in the same process.

Data (`--data`): `real` (default) is `--n` MiniLM embeddings of real text with `--queries` held-out texts as queries
(bench/real_embeddings.py: Bible verses of the three shipped translations, Shakespeare lines, Debian FAQ paragraphs;
cached under runs/bench-cache/); `random` is Gaussian vectors, L2-normalised, the worst case for graph indexes.
The truth is the exact top-10 by brute force.

Every graph uses M=16 and efConstruction=128 and is tuned to each target recall@10 (`--recall 0.95 0.99`) on the
held-out queries: the smallest ef (efSearch) that reaches it, found by doubling from 16 and bisecting to within 1/16
of the bracket, each library at its own ef. The store's own calibration (`SQLiteStore.tune_ann`, stored vectors as
queries, no held-out truth) is run too and its ef printed beside the one the held-out queries need. Then, at the
tuned ef, paired rounds (at least 10, the order rotating each round) time:
- single queries, one at a time on one thread (a RAG question is one query): dlforge's `SQLiteStore.search_dense`,
  the call `dlforge rag ask` makes, against faiss and hnswlib called with one query each;
- the whole batch in one call on every core: the store's index (`search_batch`), faiss, hnswlib.
Printed: queries/s of each and the median ratio dlforge/baseline with its min and max (above 1: dlforge is faster),
and the build time of each graph. The store's exact search (`search_dense(..., exact=True)`) is timed against faiss's
flat index.

    python bench/vector_search.py [--data real|random] [--n 100000] [--queries 1000] [--rounds 10]
                                  [--recall 0.95 0.99] [--dtype f32 f16] [--exact-only] [--crossover] [--json] [--quick]

`--dtype f32 f16` (the default) builds one store per dtype: `dlforge` (f32) is the like-for-like comparison (same M,
same precision as the baselines); `dlforge_f16` stores the graph's vectors in 16 bits (half the memory traffic per
distance; the baselines stay float32, so its rows compare different precisions, and say so).

`--crossover` instead times, on the first 1,000 to 20,000 real vectors, the store's exact search (a float32 matrix
product, what `VectorIndex.search` does up to `EXACT_BELOW` vectors) against usearch's brute force and the graph at
recall@10 0.95 and 0.99: where exact stops being the cheaper way.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlforge.rag.sqlite_store import SQLiteStore
from dlforge.rag.store import ChunkRecord, DocumentRecord

sys.path.insert(0, str(Path(__file__).parent))
from real_embeddings import real_embeddings  # noqa: E402

DIM, K, M, EF_ADD = 384, 10, 16, 128
EF_MAX = 4096
CORES = os.cpu_count() or 1


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


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's true top-10 among its found top-10 (found: rows of base, (Q, 10))."""
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / K for f, t in zip(found, truth, strict=True)]))


def build_store(folder: Path, base: np.ndarray, dtype: str) -> tuple[SQLiteStore, int, float]:
    """The dlforge store holding `base` as chunks (1,000 per document); returns it, the chunk id of row 0 (ids are
    consecutive), build seconds."""
    settings = {"embedder": {"name": "bench", "source": "bench", "dim": DIM, "fingerprint": "0"},
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
    assert (np.diff(ids) == 1).all(), "the store's chunk ids are not consecutive"
    return store, int(ids[0]), seconds


@dataclass
class Engine:
    """One index: how to set its ef, search one query (-> ids as rows of base), search a batch (-> (Q, K) rows)."""
    name: str
    build_s: float
    set_ef: Callable[[int], None]
    one: Callable[[np.ndarray], np.ndarray]
    batch: Callable[[np.ndarray], np.ndarray]


def store_engine(name: str, store: SQLiteStore, first_id: int, build_s: float) -> Engine:
    def one(q: np.ndarray) -> np.ndarray:
        return np.fromiter((c for c, _ in store.search_dense(q, K)), np.int64, K) - first_id

    def batch(qs: np.ndarray) -> np.ndarray:
        return store.ann.search_batch(qs, K, threads=CORES) - first_id

    return Engine(name, build_s, lambda ef: setattr(store.ann, "ef", ef), one, batch)


def engines(base: np.ndarray) -> list[Engine]:
    """The baselines: faiss IndexHNSWFlat and hnswlib, both M=16, efConstruction 128, float32."""
    import faiss
    import hnswlib

    out = []

    t0 = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(DIM, M, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = EF_ADD
    faiss.omp_set_num_threads(CORES)
    hnsw.add(base)
    built = time.perf_counter() - t0

    def faiss_one(q: np.ndarray) -> np.ndarray:
        return hnsw.search(q[None], K)[1][0]

    def faiss_batch(qs: np.ndarray) -> np.ndarray:
        faiss.omp_set_num_threads(CORES)
        try:
            return hnsw.search(qs, K)[1]
        finally:
            faiss.omp_set_num_threads(1)

    out.append(Engine("faiss_hnsw", built, lambda ef: setattr(hnsw.hnsw, "efSearch", ef), faiss_one, faiss_batch))

    t0 = time.perf_counter()
    graph = hnswlib.Index(space="ip", dim=DIM)
    graph.init_index(max_elements=len(base), M=M, ef_construction=EF_ADD, random_seed=0)
    graph.add_items(base, np.arange(len(base)), num_threads=CORES)
    built = time.perf_counter() - t0

    def hnswlib_one(q: np.ndarray) -> np.ndarray:
        return graph.knn_query(q[None], K, num_threads=1)[0][0]

    def hnswlib_batch(qs: np.ndarray) -> np.ndarray:
        return graph.knn_query(qs, K, num_threads=CORES)[0]

    out.append(Engine("hnswlib", built, graph.set_ef, hnswlib_one, hnswlib_batch))
    faiss.omp_set_num_threads(1)  # single queries: one thread each (faiss parallelises over a batch's queries)
    return out


def tune(engine: Engine, queries: np.ndarray, truth: np.ndarray, target: float) -> tuple[int, float]:
    """The smallest ef reaching `target` recall@10: doubling, then bisection (recall grows with ef)."""
    def measure(ef: int) -> float:
        engine.set_ef(ef)
        return recall(engine.batch(queries), truth)

    lo, hi = 8, 16
    while measure(hi) < target and hi < EF_MAX:
        lo, hi = hi, hi * 2
    while hi - lo > max(1, hi // 16):
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if measure(mid) >= target else (mid, hi)
    return hi, measure(hi)


def rounds_of(calls: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each call per round, the order rotating each round so that drift hits all alike."""
    names, times = list(calls), {name: [] for name in calls}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def ratios(times: dict[str, list[float]], n_queries: int) -> dict:
    """Queries/s of each (median round) and each dlforge store's speed over each baseline per round: median, min,
    max."""
    out = {"qps": {name: round(n_queries / statistics.median(t), 1) for name, t in times.items()}}
    for ours in (n for n in times if n.startswith("dlforge")):
        for name, t in times.items():
            if not name.startswith("dlforge"):
                r = [b / a for a, b in zip(times[ours], t, strict=True)]
                out[f"{ours}/{name}"] = {"median": round(statistics.median(r), 3), "min": round(min(r), 3),
                                         "max": round(max(r), 3)}
    return out


def at_recall(target: float, graphs: list[Engine], queries: np.ndarray, truth: np.ndarray, rounds: int,
              stores: dict[str, SQLiteStore]) -> dict:
    """Each graph tuned to `target`, then single queries and the batch timed side by side."""
    calibrated = {name: store.tune_ann(target)["expansion_search"] for name, store in stores.items()}
    tuned = {e.name: tune(e, queries, truth, target) for e in graphs}
    for e in graphs:  # each at its own tuned ef, and its single-query answers checked against its batch's
        e.set_ef(tuned[e.name][0])
        assert recall(np.stack([e.one(q) for q in queries[:50]]), truth[:50]) >= min(target - 0.1, 0.85), e.name
    single = rounds_of({e.name: (lambda e=e: [e.one(q) for q in queries]) for e in graphs}, rounds)
    batch = rounds_of({e.name: (lambda e=e: e.batch(queries)) for e in graphs}, rounds)
    return {"target": target, "ef": {n: ef for n, (ef, _) in tuned.items()}, "calibrated_ef": calibrated,
            "recall@10": {n: round(r, 4) for n, (_, r) in tuned.items()},
            "single": ratios(single, len(queries)), "batch": ratios(batch, len(queries))}


def crossover(base: np.ndarray, queries: np.ndarray, sizes: tuple[int, ...] = (1000, 2000, 5000, 10000, 20000)
              ) -> list[dict]:
    """Milliseconds per query (best of 3 passes, one thread) on the first `n` vectors: the store's exact search (a
    float32 matrix product), usearch's brute force, and the graph at its ef for recall@10 0.95 and 0.99."""
    from dlforge.rag.vector_index import VectorIndex

    def ms(fn: Callable[[np.ndarray], object]) -> float:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for q in queries:
                fn(q)
            best = min(best, time.perf_counter() - t0)
        return round(1000 * best / len(queries), 3)

    rows = []
    for n in sizes:
        part = np.ascontiguousarray(base[:n])
        index = VectorIndex(DIM, connectivity=M, expansion_add=EF_ADD)
        index.add(np.arange(n), part, threads=CORES)
        truth = ground_truth(part, queries)
        graph = Engine("graph", 0.0, lambda ef, i=index: setattr(i, "ef", ef), lambda q: q,
                       lambda qs, i=index: i.search_batch(qs, K, threads=CORES))
        row = {"n": n, "exact_matrix_ms": ms(lambda q, i=index: i._search_matrix(q, K)),
               "usearch_exact_ms": ms(lambda q, i=index: i.index.search(q, K, exact=True))}
        for target in (0.95, 0.99):
            index.ef = tune(graph, queries, truth, target)[0]
            row[f"graph@{target}"] = {"ef": index.ef, "ms": ms(lambda q, i=index: i.index.search(q, K))}
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="real", choices=["real", "random"])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--recall", type=float, nargs="+", default=[0.95, 0.99])
    ap.add_argument("--dtype", nargs="+", default=["f32", "f16"], choices=["f32", "f16", "bf16"],
                    help="how dlforge's HNSW index stores vectors, one store each (the baselines: float32)")
    ap.add_argument("--exact-only", action="store_true",
                    help="only the exact searches: the store's exact=True against faiss's IndexFlatIP (no graphs)")
    ap.add_argument("--crossover", action="store_true",
                    help="only the exact-versus-graph crossover on 1,000 to 20,000 vectors")
    ap.add_argument("--quick", action="store_true", help="smoke check: random, 10,000 vectors, 100 queries, 2 rounds")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.data, args.n, args.queries, args.rounds = "random", 10_000, 100, 2
    try:
        import faiss
        import hnswlib  # noqa: F401
    except ImportError:
        sys.exit("this benchmark needs faiss-cpu and hnswlib: pip install 'dlforge[bench]'")
    faiss.omp_set_num_threads(1)

    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    if args.data == "real":
        base, queries, data = real_embeddings(args.n, args.queries, log=log)
    else:
        base, queries, data = unit(args.n, 0), unit(args.queries, 1), {"texts": "random unit vectors"}
    if args.crossover:
        rows = crossover(base, queries[:300])
        if args.json:
            print(json.dumps({"data": args.data, "about": data, "queries": 300, "crossover": rows}, indent=2))
        for r in [] if args.json else rows:
            print(f"{r['n']:>6,} vectors: exact (matrix) {r['exact_matrix_ms']:.3f} ms, usearch brute force "
                  f"{r['usearch_exact_ms']:.3f} ms, graph " + ", ".join(
                      f"recall {t}: ef {r[f'graph@{t}']['ef']} {r[f'graph@{t}']['ms']:.3f} ms" for t in (0.95, 0.99)))
        return
    truth = ground_truth(base, queries)
    dtypes = args.dtype[:1] if args.exact_only else args.dtype  # the exact search is the same for every dtype
    names = {d: "dlforge" if d == "f32" else f"dlforge_{d}" for d in dtypes}
    result = {"data": args.data, "about": data, "n": len(base), "queries": len(queries), "dim": DIM,
              "rounds": args.rounds, "M": M, "ef_construction": EF_ADD, "cores": CORES,
              "stores": {name: {"dtype": d, "M": M, "ef_construction": EF_ADD,
                                "like_for_like": d == "f32"} for d, name in names.items()},
              "baselines": "faiss IndexHNSWFlat and hnswlib: M=16, efConstruction 128, float32"}
    with tempfile.TemporaryDirectory() as tmp:
        stores = {}
        for d, name in names.items():
            (Path(tmp) / name).mkdir()
            stores[name] = build_store(Path(tmp) / name, base, d)
            log(f"built {name} in {stores[name][2]:.1f} s")
        store, first_id, _ = next(iter(stores.values()))
        flat = faiss.IndexFlatIP(DIM)
        flat.add(base)
        exact = {"dlforge": lambda: [store.search_dense(q, K, exact=True) for q in queries],
                 "faiss_flat": lambda: [flat.search(q[None], K) for q in queries]}
        found = np.stack([np.array([c for c, _ in store.search_dense(q, K, exact=True)]) for q in queries])
        result["exact"] = {"recall@10": round(recall(found - first_id, truth), 4),
                           **ratios(rounds_of(exact, args.rounds), len(queries))}
        if not args.exact_only:
            graphs = [store_engine(name, *built) for name, built in stores.items()] + engines(base)
            result["build_s"] = {e.name: round(e.build_s, 2) for e in graphs}
            result["at_recall"] = [at_recall(t, graphs, queries, truth, args.rounds,
                                             {name: built[0] for name, built in stores.items()})
                                   for t in args.recall]
        for built in stores.values():
            built[0].close()

    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['n']:,} x {DIM}-d {args.data} vectors ({data['texts']}), {result['queries']} queries, "
          f"{args.rounds} rounds, {CORES} cores; every graph M={M}, efConstruction {EF_ADD}; baselines float32; "
          + ", ".join(f"{n}: {v['dtype']}{'' if v['like_for_like'] else ' (differs from the baselines)'}"
                      for n, v in result["stores"].items()))
    e = result["exact"]
    print(f"  exact: dlforge {e['qps']['dlforge']:.0f} q/s, faiss flat {e['qps']['faiss_flat']:.0f} q/s, ratio "
          f"{e['dlforge/faiss_flat']['median']:.2f} (min {e['dlforge/faiss_flat']['min']:.2f}, max "
          f"{e['dlforge/faiss_flat']['max']:.2f}); recall@10 {e['recall@10']}")
    if "build_s" in result:
        print("  build: " + ", ".join(f"{n} {s:.1f} s" for n, s in result["build_s"].items()))
    for row in result.get("at_recall", []):
        print(f"  recall@10 >= {row['target']}: ef " + ", ".join(f"{n} {ef}" for n, ef in row["ef"].items())
              + "; the stores' own calibration: " + ", ".join(f"{n} {ef}" for n, ef in row["calibrated_ef"].items()))
        for mode in ("single", "batch"):
            r = row[mode]
            qps = ", ".join(f"{n} {q:.0f}" for n, q in r["qps"].items())
            rel = ", ".join(f"{k} {v['median']:.2f} ({v['min']:.2f}-{v['max']:.2f})" for k, v in r.items()
                            if k != "qps")
            print(f"    {mode:6s} q/s: {qps}; {rel}")


if __name__ == "__main__":
    main()
