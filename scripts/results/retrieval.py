"""Write docs/results/retrieval.md: retrieval quality on the three development sets (issue 19), each technique a row.

    python scripts/results/retrieval.py quality [--work runs/retrieval]   # index, evaluate, fusion grid, naive baseline
    python scripts/results/retrieval.py ablations       # each technique switched off (or on), on quality's indexes
    python scripts/results/retrieval.py tune [--sets debian-faq-blanked]  # `rag tune` on each set, before and after
    python scripts/results/retrieval.py                                   # re-render from the records only

The sets (bench/naive_rag.py `devsets`): the Debian FAQ with its 120 question headings as questions (plain), the
same with every question's text blanked out of the pages (tuned on: the default fusion weight was chosen here), and
the Python FAQ with 158 hand-written user questions (held out: reported, never tuned on). Records live in
docs/results/retrieval.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from dlforge.cli.main import run_script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for resultstools: scripts/README.md
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))  # the naive baseline lives in bench/
import naive_rag  # noqa: E402
import resultstools  # noqa: E402

RECORDS = resultstools.RESULTS / "retrieval.json"
OUT = resultstools.RESULTS / "retrieval.md"
SHOWN = {("linear", 0.1): "hybrid, linear, keyword weight 0.1", ("linear", 0.5): "hybrid, linear, keyword weight 0.5",
         ("rrf", 0.2): "hybrid, weighted RRF, keyword weight 0.2 (the default before linear fusion)",
         ("rrf", 1.0): "hybrid, equal-weight RRF (the usual hybrid)"}
SETS = ("debian-faq", "debian-faq-blanked", "python-faq")
ROLE = {"debian-faq": "development (easy: the question is the heading)", "debian-faq-blanked": "development, tuned on",
        "python-faq": "held out"}


def quality(work: Path) -> dict:
    """Per set: the default pipeline's three modes (with latency), the fusion grid, and the naive baseline."""
    from dlforge.rag.evaluate import evaluate, tune_fusion
    from dlforge.rag.ingest import index_folder

    out = {}
    for name, (questions, corpus) in naive_rag.devsets(work).items():
        db = work / f"{name}.db"
        for stale in work.glob(f"{name}.db*"):
            stale.unlink()
        ingest = index_folder(corpus, db)
        report = evaluate(questions, db, modes=("dense", "keyword", "hybrid"))
        grid = tune_fusion(questions, db)["grid"]  # not saved: the index keeps the default weight
        out[name] = {"questions": report["questions"], "chunks": ingest.chunks_added,
                     "chunks_per_s": round(ingest.chunks_per_s, 1), "modes": report["modes"], "fusion_grid": grid,
                     "naive": naive_rag.run(questions, corpus)}
        print(f"{name}: {report['modes']['hybrid']}", flush=True)
    return out


def ablations(work: Path) -> dict:
    """Per set, over the index `quality` built: the techniques the default keeps, each switched off (or the one it
    does not keep switched on), measured on the same chunks and questions. Rows: keyword search without stemming
    (FTS5 unicode61 instead of porter), chunks without their heading context (embedded and keyword-indexed as their
    own text only), and small-to-big (each sentence of a chunk embedded with the chunk's context, the chunk scored by
    its best sentence)."""
    import sqlite3

    import numpy as np

    from dlforge.rag.chunk import CONTEXT_SEP
    from dlforge.rag.evaluate import mean_scores, read_questions, score_ranking
    from dlforge.rag.fusion import Fusion
    from dlforge.rag.mine import sentences
    from dlforge.rag.retrieve import Retriever
    from dlforge.rag.sqlite_store import FTS_TOKENIZER, fts_query

    def keyword(rows: list[tuple], tokenizer: str, questions: list[str]) -> list[list[tuple[int, float]]]:
        db = sqlite3.connect(":memory:")
        db.execute(f"CREATE VIRTUAL TABLE f USING fts5(heading, text, tokenize='{tokenizer}')")
        db.executemany("INSERT INTO f(rowid, heading, text) VALUES (?, ?, ?)", rows)
        sql = "SELECT rowid, bm25(f) AS s FROM f WHERE f MATCH ? ORDER BY s LIMIT 50"
        return [[(i, -s) for i, s in db.execute(sql, [fts_query(q)])] if fts_query(q) else [] for q in questions]

    def top(matrix: np.ndarray, owners: np.ndarray, query: np.ndarray) -> list[tuple[int, float]]:
        best: dict[int, float] = {}
        for i in np.argsort(-(matrix @ query), kind="stable"):
            best.setdefault(int(owners[i]), float(matrix[i] @ query))
            if len(best) == 50:
                break
        return sorted(best.items(), key=lambda kv: -kv[1])

    out = {}
    for name, (questions_file, _corpus) in naive_rag.devsets(work).items():
        items = read_questions(questions_file)
        questions = [q for q, _ in items]
        with Retriever.open(work / f"{name}.db") as retriever:
            records = retriever.store.records(retriever.store.chunk_ids())
            embed = retriever.embedder.embed
            queries = embed(questions)
            dense = [retriever.store.search_dense(q, 50) for q in queries]
        by_id = {r["chunk_id"]: r for r in records}
        ids = np.array([r["chunk_id"] for r in records])
        heading = [(r["chunk_id"], CONTEXT_SEP.join(r["heading"]), r["text"]) for r in records]
        plain_vectors = embed([r["text"] for r in records])  # no heading context in front
        plain_dense = [top(plain_vectors, ids, q) for q in queries]
        pieces = [(r["chunk_id"], f"{CONTEXT_SEP.join(r['heading'])}\n\n{s}") for r in records
                  for _, s in sentences(r["text"])] + [(r["chunk_id"], r["text"]) for r in records
                                                      if not sentences(r["text"])]
        sentence_vectors = embed([t for _, t in pieces])
        small = [top(sentence_vectors, np.array([i for i, _ in pieces]), q) for q in queries]
        stemmed = keyword(heading, FTS_TOKENIZER, questions)
        unstemmed = keyword(heading, FTS_TOKENIZER.removeprefix("porter "), questions)
        no_heading = keyword([(i, "", t) for i, _, t in heading], FTS_TOKENIZER, questions)
        fuse = Fusion().fuse

        def score(lists: list[list[tuple[int, float]]], by_id=by_id, items=items) -> dict[str, float]:
            return mean_scores([score_ranking([by_id[i] for i, _ in ranked[:10]], gold)
                                for ranked, (_, gold) in zip(lists, items, strict=True)])

        out[name] = {
            "default: keyword (porter stemming, headings)": score(stemmed),
            "keyword without stemming": score(unstemmed),
            "hybrid, keyword without stemming": score([fuse(d, k) for d, k in zip(dense, unstemmed, strict=True)]),
            "dense without heading context": score(plain_dense),
            "keyword without heading context": score(no_heading),
            "hybrid without heading context": score([fuse(d, k) for d, k in
                                                     zip(plain_dense, no_heading, strict=True)]),
            f"small-to-big: dense over {len(pieces)} sentences": score(small),
            "small-to-big: hybrid": score([fuse(d, k) for d, k in zip(small, stemmed, strict=True)]),
        }
        print(f"{name}: {out[name]}", flush=True)
    return out


def tune(work: Path, sets: list[str]) -> dict:
    from dlforge.rag.tune import tune_index

    out = {}
    pairs = naive_rag.devsets(work)
    for name in sets:
        questions, corpus = pairs[name]
        t0 = time.perf_counter()
        report = tune_index(corpus, work / f"{name}.db", work / f"{name}-tuned.db", questions=questions,
                            overwrite=True)
        out[name] = {**report.to_dict(), "wall_s": round(time.perf_counter() - t0, 1)}
        print(f"{name}: {out[name]['evaluation']}", flush=True)
    return out


def _row(label: str, m: dict, latency: bool = True) -> str:
    cells = [f"{m['recall@1']:.3f}", f"{m['recall@5']:.3f}", f"{m['recall@10']:.3f}", f"{m['mrr']:.3f}"]
    ms = f"{m['latency_ms_p50']:.1f} ms" if latency and "latency_ms_p50" in m else "—"
    return f"| {label} | " + " | ".join(cells) + f" | {ms} |"


def render(records: dict) -> str:
    lines = ["# Results: retrieval quality (RAG II)", "", "Written by `scripts/results/retrieval.py`; do not edit by "
             "hand.", "", f"Machine: {records.get('machine', resultstools.machine())}.", "",
             "Recall@k: the share of questions whose answering section is among the top k chunks; MRR: the mean "
             "reciprocal rank of the first one (`dlforge rag eval`). Latency: one search, question embedding "
             "included, p50 over the questions. The naive baseline is `bench/naive_rag.py` (fixed 800-character "
             "windows, the same MiniLM, BM25, equal-weight RRF).", ""]
    quality_ = records.get("quality") or {}
    tuned = records.get("tune") or {}
    lines += _summary(quality_, tuned)
    for name in SETS:
        q = quality_.get(name)
        if not q:
            continue
        lines += [f"## {name} ({ROLE[name]}): {q['questions']} questions, {q['chunks']} chunks", "",
                  "| pipeline | recall@1 | recall@5 | recall@10 | MRR | latency p50 |", "|---|---|---|---|---|---|"]
        modes = q["modes"]
        lines.append(_row("dense (MiniLM)", modes["dense"]))
        lines.append(_row("keyword (BM25, FTS5)", modes["keyword"]))
        lines.append(_row("**hybrid, the default** (linear fusion of min-max scaled scores, keyword weight 0.3)",
                          modes["hybrid"]))
        for row in q["fusion_grid"]:
            if (row.get("method", "rrf"), row["keyword_weight"]) in SHOWN:
                lines.append(_row(SHOWN[row.get("method", "rrf"), row["keyword_weight"]], row, False))
        naive = q["naive"]["modes"]
        lines.append(_row("naive baseline: dense", naive["dense"], False))
        lines.append(_row("naive baseline: RRF (its hybrid)", naive["rrf"], False))
        for label, m in (records.get("ablations") or {}).get(name, {}).items():
            lines.append(_row(label, m, False))
        t = tuned.get(name)
        if t:
            after = t["evaluation"]["after"]
            lines.append(_row(f"`rag tune` embedder, dense ({t['pairs']} pairs, {t['seconds']:.0f} s)",
                              after["dense"]))
            lines.append(_row("`rag tune` embedder, hybrid", after["hybrid"]))
        lines.append("")
    return "\n".join(lines) + "\n"


def _summary(quality_: dict, tuned: dict) -> list[str]:
    """The issue's targets against the records: what holds and what does not."""
    if not all(name in quality_ for name in SETS):
        return []

    def r5(name: str, mode: str = "hybrid") -> float:
        return quality_[name]["modes"][mode]["recall@5"]

    naive = {n: quality_[n]["naive"]["modes"]["rrf"]["recall@5"] for n in SETS}
    lines = ["## Against the targets", "",
             f"- Blanked Debian FAQ, default recall@5 >= 0.90: **{r5('debian-faq-blanked'):.3f}, not met** (dense "
             f"alone {r5('debian-faq-blanked', 'dense'):.3f}; the default matches it and beats its MRR, "
             f"{quality_['debian-faq-blanked']['modes']['hybrid']['mrr']:.3f} against "
             f"{quality_['debian-faq-blanked']['modes']['dense']['mrr']:.3f}). Dense recall@10 is "
             f"{quality_['debian-faq-blanked']['modes']['dense']['recall@10']:.3f}: the answer is not in MiniLM's "
             "top 10 for the rest, so no fusion of these lists can reach 0.90; a reranker or a stronger embedder "
             "would have to find it.",
             f"- Plain Debian FAQ >= 0.97: {r5('debian-faq'):.3f}. Python FAQ (held out) >= 0.90: "
             f"{r5('python-faq'):.3f} (dense alone {r5('python-faq', 'dense'):.3f}).",
             "- The default beats the naive baseline (its RRF) on every set: "
             + ", ".join(f"{n} {r5(n):.3f} against {naive[n]:.3f}" for n in SETS) + ".",
             "- Query latency p50 of the default <= 100 ms: "
             + ", ".join(f"{quality_[n]['modes']['hybrid']['latency_ms_p50']:.1f} ms" for n in SETS) + "."]
    if tuned:
        lines.append("- `rag tune` <= 15 min: " + ", ".join(f"{n} {t['seconds']:.0f} s" for n, t in tuned.items())
                     + " (mining, training one epoch and re-indexing).")
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", nargs="?", choices=["quality", "ablations", "tune"],
                    help="measure this (default: render only)")
    ap.add_argument("--work", type=Path, default=Path("runs") / "retrieval")
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    args = ap.parse_args()
    records = resultstools.load(RECORDS, {})
    if args.what == "quality":
        records["quality"] = quality(args.work)
    elif args.what == "ablations":
        records["ablations"] = ablations(args.work)
    elif args.what == "tune":
        records["tune"] = {**records.get("tune", {}), **tune(args.work, args.sets)}
    resultstools.finish(RECORDS, OUT, records, render)


if __name__ == "__main__":
    run_script(main)
