"""The naive retrieval baseline that dlforge's default pipeline must beat: what a user writes in an afternoon.

Each file of the corpus folder becomes plain text (dlforge's reader, only to get the text out of HTML; the files
dlforge itself would index: supported types, no symlinks), cut into fixed 800-character windows (no overlap by
default; `--overlap 100` for the common variant), with no regard for headings, sentences or words. Every window is
embedded by the same all-MiniLM-L6-v2 as dlforge (cosine = dot product of the L2-normalised vectors) and indexed by
a plain Okapi BM25 (k1 = 1.5, b = 0.75, lowercase word tokens, idf as in the rank_bm25 package's BM25Okapi:
log((N - n + 0.5) / (n + 0.5)), negative values replaced by 0.25 x the mean idf). A query takes the dense top 50
and the BM25 top 50 and fuses them by equal-weight reciprocal rank fusion (score = sum of 1 / (60 + rank)).

Scoring is dlforge's (`dlforge.rag.evaluate`: recall@1/5/10, MRR, nDCG@10) on a questions file whose gold items are
{"source", "heading"}: a window matches when it overlaps, by at least one character, a section of that file that
has the heading on its heading path. That is lenient to the baseline (a window that spans three short sections
counts for all three), which is the fair side to err on.

    python bench/naive_rag.py --questions Q.jsonl --corpus DIR [--json]
    python bench/naive_rag.py --devsets [--work runs/naive-rag] [--json]   # Debian FAQ, Debian FAQ blanked, Python FAQ

--devsets writes the three development sets' questions (and the blanked copy of the Debian FAQ) under --work, as
scripts/datasets/debian_faq_devset.py and python_faq_devset.py do, and the figures to WORK/results.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from dlforge.cli.main import run_script
from dlforge.rag.evaluate import read_questions, score_ranking
from dlforge.rag.faq import (
    FAQ_DIR,
    PYTHON_FAQ_DIR,
    checked_questions,
    faq_questions,
    python_faq_pages,
    write_blanked_corpus,
)
from dlforge.rag.readers import file_type, read_document
from dlforge.runs.rundir import atomic_write_json, atomic_write_text

CHUNK_CHARS = 800
DEPTH = 50  # candidates taken from each list before fusion
RRF_K = 60
TOP = 10
PYTHON_FAQ_QUESTIONS = Path(__file__).resolve().parents[1] / "scripts" / "datasets" / "python_faq_questions.jsonl"


def corpus_chunks(folder: Path, size: int = CHUNK_CHARS, overlap: int = 0) -> list[dict]:
    """Fixed windows of `size` characters (each `size - overlap` after the last) over every file's text, with the
    headings of the sections each window overlaps (for scoring only: retrieval never sees them)."""
    chunks = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_symlink() or file_type(path) is None:
                continue
            doc = read_document(path, path.read_bytes())
            rel = path.relative_to(folder).as_posix()
            for start in range(0, max(len(doc.text) - overlap, 1), size - overlap):
                end = min(start + size, len(doc.text))
                text = doc.text[start:end].strip()
                if not text:
                    continue
                headings = {h for s in doc.sections if s.start < end and s.end > start for h in s.heading}
                chunks.append({"text": text, "source": rel, "relpath": rel, "start": start, "end": end,
                               "heading": sorted(headings)})
    return chunks


def tokenize(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


class BM25:
    """Okapi BM25 over a list of texts, the formulas of rank_bm25's BM25Okapi."""

    def __init__(self, texts: list[str], k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25):
        self.k1, self.b = k1, b
        self.tf = [Counter(tokenize(t)) for t in texts]
        self.length = np.array([sum(c.values()) for c in self.tf], dtype=np.float64)
        self.avgdl = float(self.length.mean())
        df = Counter(term for c in self.tf for term in c)
        n = len(texts)
        self.idf = {t: math.log(n - f + 0.5) - math.log(f + 0.5) for t, f in df.items()}
        floor = epsilon * sum(self.idf.values()) / len(self.idf)  # common words get a small positive weight
        self.idf = {t: (v if v >= 0 else floor) for t, v in self.idf.items()}

    def scores(self, query: str) -> np.ndarray:
        out = np.zeros(len(self.tf))
        norm = self.k1 * (1 - self.b + self.b * self.length / self.avgdl)
        for term in tokenize(query):
            if term not in self.idf:
                continue
            tf = np.array([c.get(term, 0) for c in self.tf], dtype=np.float64)
            out += self.idf[term] * tf * (self.k1 + 1) / (tf + norm)
        return out


def top(scores: np.ndarray, k: int) -> list[int]:
    order = np.argsort(-scores, kind="stable")
    return [int(i) for i in order[:k]]


def rrf(*rankings: list[int], k: int = RRF_K) -> list[int]:
    """Equal-weight reciprocal rank fusion: each list adds 1 / (k + rank) to the items it ranks (rank from 1)."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(fused, key=lambda i: -fused[i])


def run(questions: Path, corpus: Path, overlap: int = 0) -> dict:
    """Index `corpus` the naive way, answer every question of `questions` by dense, bm25 and rrf; the figures."""
    from dlforge.rag.embed import load_embedder  # torch: only once something is run

    items = read_questions(questions)
    t0 = time.perf_counter()
    chunks = corpus_chunks(corpus, overlap=overlap)
    embedder = load_embedder()
    vectors = embedder.embed([c["text"] for c in chunks])  # (N, 384), rows L2-normalised
    bm25 = BM25([c["text"] for c in chunks])
    index_s = time.perf_counter() - t0
    queries = embedder.embed([q for q, _ in items])
    rows: dict[str, list[dict]] = {"dense": [], "bm25": [], "rrf": []}
    for (question, gold), qvec in zip(items, queries, strict=True):
        dense = top(vectors @ qvec, DEPTH)
        keyword = top(bm25.scores(question), DEPTH)
        for mode, ranking in (("dense", dense), ("bm25", keyword), ("rrf", rrf(dense, keyword))):
            rows[mode].append(score_ranking([chunks[i] for i in ranking[:TOP]], gold))
    modes = {}
    for mode, scores in rows.items():
        modes[mode] = {name: round(float(np.mean([s[key] for s in scores])), 4)
                       for name, key in (("recall@1", "recall@1"), ("recall@5", "recall@5"),
                                         ("recall@10", "recall@10"), ("mrr", "rr"), ("ndcg@10", "ndcg@10"))}
    return {"questions": len(items), "corpus": str(corpus), "chunks": len(chunks), "chunk_chars": CHUNK_CHARS,
            "overlap": overlap, "index_seconds": round(index_s, 1), "modes": modes}


def devsets(work: Path) -> dict[str, tuple[Path, Path]]:
    """Write the three development sets' questions under `work`: name -> (questions file, corpus folder)."""
    def write(path: Path, rows: list[dict]) -> Path:
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return path

    work.mkdir(parents=True, exist_ok=True)
    plain = faq_questions()
    blanked = write_blanked_corpus(work / "debian-blanked", plain)
    python = checked_questions(PYTHON_FAQ_QUESTIONS, python_faq_pages())
    return {"debian-faq": (write(work / "debian-questions.jsonl", plain), FAQ_DIR),
            "debian-faq-blanked": (write(work / "debian-blanked-questions.jsonl", blanked), work / "debian-blanked"),
            "python-faq": (write(work / "python-questions.jsonl", python), PYTHON_FAQ_DIR)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=Path, help="questions .jsonl with {source, heading} gold items")
    ap.add_argument("--corpus", type=Path, help="the folder the questions are about")
    ap.add_argument("--devsets", action="store_true", help="run on the Debian FAQ (plain, blanked) and Python FAQ")
    ap.add_argument("--work", type=Path, default=Path("runs") / "naive-rag", help="where --devsets writes")
    ap.add_argument("--overlap", type=int, default=0, help="characters shared by consecutive windows (default 0)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    given = bool(args.questions) + bool(args.corpus)
    if (args.devsets and given) or (not args.devsets and given < 2):
        ap.error("give --questions Q.jsonl and --corpus DIR, or --devsets")
    if not 0 <= args.overlap < CHUNK_CHARS:
        ap.error(f"--overlap must be in [0, {CHUNK_CHARS})")
    if args.corpus and not args.corpus.is_dir():
        ap.error(f"--corpus {args.corpus}: not a folder")

    sets = devsets(args.work) if args.devsets else {args.corpus.name: (args.questions, args.corpus)}
    results = {}
    for name, (questions, corpus) in sets.items():
        results[name] = run(questions, corpus, args.overlap)
        print(f"{name}: done ({results[name]['chunks']} chunks)", file=sys.stderr)
    if args.devsets:
        atomic_write_json(args.work / "results.json", results)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    cols = ["recall@1", "recall@5", "recall@10", "mrr", "ndcg@10"]
    for name, r in results.items():
        print(f"\n{name}: {r['questions']} questions, {r['chunks']} chunks of {r['chunk_chars']} characters "
              f"(overlap {r['overlap']}), indexed in {r['index_seconds']} s")
        print(f"{'mode':6s} " + " ".join(f"{c:>10s}" for c in cols))
        for mode, m in r["modes"].items():
            print(f"{mode:6s} " + " ".join(f"{m[c]:10.4f}" for c in cols))


if __name__ == "__main__":
    run_script(main)  # a DlforgeError (a malformed questions file, a missing FAQ): one line and exit code 2
