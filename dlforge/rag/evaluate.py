"""Retrieval quality on a set of questions with known answers: recall@1/5/10, MRR, nDCG@10, latency p50/p95.

    report = evaluate("questions.jsonl", "docs.db", modes=("dense", "keyword", "hybrid"))
    report["modes"]["hybrid"]["recall@5"]

QUESTIONS.jsonl holds one object per line, `{"question": "...", "gold": [...]}`; each gold item names where the
answer is: a source file (`"guide.md"`, matched against the path relative to the indexed folder, or the end of the
absolute path), or an object with the file and a heading (`{"source": "faq.html", "heading": "2.1. How...?"}`: a
chunk matches when the heading is on its heading path, so sub-sections count) or a character range in the
document's text (`{"source": "notes.txt", "start": 120, "end": 480}`: a chunk matches when it overlaps the range).

Per question, with the gold items G and the ranked hits: recall@k is the share of G matched by a hit in the top k;
the reciprocal rank is 1 / the rank of the first hit that matches any gold item (0 if none in the top k); nDCG@10
gives a hit gain 1 when it matches a gold item that no better-ranked hit matched (so several chunks of one gold
section count once) and divides by the ideal DCG of min(|G|, 10) relevant hits. The figures are means over the
questions. Latency is the wall time of one `Retriever.search` call, question embedding included, after a warm-up.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlforge.data.corpus import jsonl_objects
from dlforge.errors import ConfigError, DataError
from dlforge.rag.fusion import GRID, METHODS, Fusion
from dlforge.rag.retrieve import MODES, Retriever
from dlforge.rag.store import Filters
from dlforge.runs.progress import Progress

KS = (1, 5, 10)


@dataclass(frozen=True)
class Gold:
    source: str
    heading: str | None = None
    start: int | None = None
    end: int | None = None

    def matches(self, hit: dict[str, Any]) -> bool:
        source = self.source.replace("\\", "/")
        if source not in (hit.get("relpath"), hit["source"]) and not hit["source"].endswith("/" + source):
            return False
        if self.heading is not None and _norm(self.heading) not in {_norm(h) for h in hit["heading"]}:
            return False
        if self.start is not None and not (hit["start"] < self.end and hit["end"] > self.start):
            return False
        return True


def _norm(text: str) -> str:
    return " ".join(text.split())


def read_questions(path: str | Path) -> list[tuple[str, list[Gold]]]:
    """The questions and their gold items; DataError names the file and line of anything malformed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the questions ({exc})") from exc
    out = []
    expected = "an object with a non-empty 'question' string"
    for number, item in jsonl_objects(path, text, expected):
        where = f"{path}:{number}"
        if not isinstance(item.get("question"), str) or not item["question"].strip():
            raise DataError(f"{where}: expected {expected}")
        gold = item.get("gold")
        if not isinstance(gold, list) or not gold:
            raise DataError(f"{where}: 'gold' must be a non-empty list of sources")
        out.append((item["question"], [_gold(g, where) for g in gold]))
    if not out:
        raise DataError(f"{path}: no questions")
    return out


def _gold(item: Any, where: str) -> Gold:
    if isinstance(item, str) and item:
        return Gold(item)
    if not isinstance(item, dict) or not isinstance(item.get("source"), str):
        raise DataError(f"{where}: each gold item is a file name or an object with a 'source' string, got {item!r}")
    heading, start, end = item.get("heading"), item.get("start"), item.get("end")
    if heading is not None and not isinstance(heading, str):
        raise DataError(f"{where}: gold 'heading' must be a string, got {heading!r}")
    if (start is None) != (end is None) or (start is not None and not (
            isinstance(start, int) and isinstance(end, int) and 0 <= start < end)):
        raise DataError(f"{where}: gold 'start' and 'end' must both be given, integers with 0 <= start < end")
    return Gold(item["source"], heading, start, end)


def score_ranking(hits: list[dict[str, Any]], gold: list[Gold], ks: tuple[int, ...] = KS) -> dict[str, float]:
    """recall@k for each k, rr and ndcg@10 of one ranked list (see the module docstring)."""
    first_rank = {}  # gold index -> rank of the first hit matching it
    first_relevant = None
    dcg = 0.0
    for rank, hit in enumerate(hits, 1):
        matched = [g for g in range(len(gold)) if gold[g].matches(hit)]
        if matched and first_relevant is None:
            first_relevant = rank
        new = [g for g in matched if g not in first_rank]
        for g in new:
            first_rank[g] = rank
        if new and rank <= 10:
            dcg += 1.0 / math.log2(rank + 1)
    ideal = sum(1.0 / math.log2(r + 1) for r in range(1, min(len(gold), 10) + 1))
    out = {f"recall@{k}": sum(r <= k for r in first_rank.values()) / len(gold) for k in ks}
    out["rr"] = 1.0 / first_relevant if first_relevant else 0.0
    out["ndcg@10"] = dcg / ideal
    return out


def evaluate(questions: str | Path, db: str | Path, modes: tuple[str, ...] = ("hybrid",), k: int = 10,
             model: str | None = None, filters: Filters | None = None, exact: bool = False,
             details: bool = False) -> dict[str, Any]:
    """Run every question through each retrieval mode (interleaved, question by question) and score them."""
    items = read_questions(questions)
    depth = max(k, max(KS))
    rows: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    per_question = []
    with Retriever.open(db, model) as retriever, Progress("rag eval", total=len(items), unit="questions") as shown:
        for mode in modes:  # warm-up: the first query pays for lazy loading (vector index, model kernels)
            retriever.search(items[0][0], depth, mode, filters, exact)
        for done, (question, gold) in enumerate(items, start=1):
            entry: dict[str, Any] = {"question": question}
            for mode in modes:
                t0 = time.perf_counter()
                hits = retriever.search(question, depth, mode, filters, exact)
                ms = (time.perf_counter() - t0) * 1000
                scores = score_ranking(hits, gold)
                rows[mode].append({**scores, "ms": ms})
                entry[mode] = {**{k_: round(v, 4) for k_, v in scores.items()},
                               "top": [f"{h['relpath']} | {' > '.join(h['heading'][-1:])}" for h in hits[:3]]}
            per_question.append(entry)
            shown.update(done)
    report = {"questions": len(items), "db": str(db), "k": depth, "modes": {m: _summary(rows[m]) for m in modes}}
    if details:
        report["per_question"] = per_question
    return report


def mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    """The mean of `score_ranking`'s scores over questions: recall@k for each k, MRR and nDCG@10, to 4 decimals."""
    out = {f"recall@{k}": round(float(np.mean([r[f"recall@{k}"] for r in rows])), 4) for k in KS}
    out["mrr"] = round(float(np.mean([r["rr"] for r in rows])), 4)
    out["ndcg@10"] = round(float(np.mean([r["ndcg@10"] for r in rows])), 4)
    return out


def _summary(rows: list[dict[str, float]]) -> dict[str, float]:
    ms = np.array([r["ms"] for r in rows])
    out = mean_scores(rows)
    out["latency_ms_p50"] = round(float(np.percentile(ms, 50)), 2)
    out["latency_ms_p95"] = round(float(np.percentile(ms, 95)), 2)
    return out


def parse_modes(mode: str) -> tuple[str, ...]:
    """"all" -> the three modes; otherwise one of them."""
    if mode == "all":
        return ("dense", "keyword", "hybrid")
    if mode not in MODES:
        raise ConfigError(f"--mode {mode!r}: expected all, {', '.join(MODES)}")
    return (mode,)


def tune_fusion(questions: str | Path, db: str | Path, model: str | None = None, grid: tuple[float, ...] = GRID,
                methods: tuple[str, ...] = METHODS, save: bool = False) -> dict[str, Any]:
    """Each fusion method and keyword weight of `grid` (dense weight 1) scored on the questions; the best by
    recall@5, then MRR, then the current method, then the weight closest to the current one. With `save`, the choice
    is recorded in the index (its writer lock held for the moment of the write) and hybrid search uses it from then
    on."""
    from dlforge.rag.sqlite_store import open_store

    items = read_questions(questions)
    with Retriever.open(db, model) as retriever:
        depth = retriever.candidates
        current = retriever.fusion
        lists = []
        for question, _gold in items:
            query = retriever.embed_query(question)
            lists.append((retriever.store.search_dense(query, depth), retriever.store.search_keyword(question, depth)))
        ids = sorted({i for d, k in lists for i, _ in d + k})
        records = {r["chunk_id"]: r for r in retriever.store.records(ids)}
    rows = []
    for method in methods:
        for weight in grid:
            fusion = Fusion(method=method, keyword_weight=weight, rrf_k=current.rrf_k)
            scores = [score_ranking([records[i] for i, _ in fusion.fuse(d, k)[:10]], gold)
                      for (d, k), (_q, gold) in zip(lists, items, strict=True)]
            rows.append({"method": method, "keyword_weight": weight, **mean_scores(scores)})
    best = max(rows, key=lambda r: (r["recall@5"], r["mrr"], r["method"] == current.method,
                                    -abs(r["keyword_weight"] - current.keyword_weight)))
    chosen = Fusion(method=best["method"], keyword_weight=best["keyword_weight"], rrf_k=current.rrf_k,
                    tuned_on={"questions": str(Path(questions).resolve()), "count": len(items),
                              "recall@5": best["recall@5"], "mrr": best["mrr"]})
    if save:
        with open_store(db, writer=True) as store:
            store.update_settings("fusion", chosen.to_dict())
    return {"questions": len(items), "db": str(db), "grid": rows, "before": current.to_dict(),
            "chosen": chosen.to_dict(), "saved": save}
