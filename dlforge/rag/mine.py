"""Training pairs mined from an index's own chunks, without labels: the inverse cloze task with hard negatives.

    pairs = mine_pairs(store, embedder, per_chunk=4, seed=0)
    pairs[0] == Pair(query="Files under /usr/local are not ...", positive="Chapter 4 > 4.6.\n\n...", chunk=17,
                     negative="...", negative_chunk=52)

Inverse cloze (Lee, Chang & Toutanova 2019, "Latent Retrieval for Weakly Supervised Open Domain Question
Answering"): a sentence of a passage plays the question and the passage it came from the answer. The sentence is
removed from its passage nine times in ten, so that the model learns to match a passage by its context and not only
by repeated words. Each query gets one hard negative: the best-ranked other chunk by BM25 or by the current
embedding model (alternating; the other when the first finds none), never its own chunk and never a chunk of the
same section (overlapping windows of one section share text and would be false negatives).

A passage is the chunk's heading path, a blank line, then its text: what the index embeds (see `chunk.embedding_text`).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from dlforge.rag.chunk import CONTEXT_SEP
from dlforge.rag.embed import RagEmbedder
from dlforge.rag.store import Store

SENTENCE = re.compile(r"(?<=[.!?])\s+|\n\s*\n")
MIN_WORDS, MAX_WORDS = 5, 60  # a query sentence: long enough to mean something, short like a question
REMOVE = 0.9  # the share of pairs whose query sentence is cut out of the positive (Lee et al.)
DEPTH = 10  # candidates looked at for a hard negative


@dataclass(frozen=True)
class Pair:
    query: str
    positive: str
    chunk: int  # the chunk id of the positive
    negative: str | None = None
    negative_chunk: int | None = None


def passage(record: dict[str, Any], text: str | None = None) -> str:
    """The chunk as the index embeds it: the headings above it (the chunk's own heading line is in its text when it
    starts the section), a blank line, the text."""
    heading = list(record["heading"])
    own = heading[-1] if heading else None
    starts = own and own in record["text"].lstrip().split("\n", 1)[0]  # the section's first chunk: "## Own" first
    context = heading[:-1] if starts else heading
    if not context and record.get("title"):
        context = [record["title"]]
    body = record["text"] if text is None else text
    return f"{CONTEXT_SEP.join(context)}\n\n{body}" if context else body


def sentences(text: str) -> list[tuple[str, str]]:
    """The sentences of `text` that can serve as queries (MIN_WORDS to MAX_WORDS words): (as in the text, with its
    whitespace collapsed)."""
    out = []
    for part in SENTENCE.split(text):
        words = part.split()
        if MIN_WORDS <= len(words) <= MAX_WORDS:
            out.append((part, " ".join(words)))
    return out


def section_key(record: dict[str, Any]) -> tuple[int, tuple[str, ...]]:
    return record["doc_id"], tuple(record["heading"])


def mine_pairs(store: Store, embedder: RagEmbedder, per_chunk: int = 4, seed: int = 0) -> list[Pair]:
    """Up to `per_chunk` (query, positive, hard negative) triples per chunk with at least two usable sentences
    (a chunk of one sentence would leave nothing to match once it is removed)."""
    rng = random.Random(seed)
    ids = store.chunk_ids()
    records = store.records(ids)
    by_id = {r["chunk_id"]: r for r in records}
    drafts = []
    for r in records:
        found = sentences(r["text"])
        if len(found) < 2:
            continue
        for raw, query in rng.sample(found, min(per_chunk, len(found))):
            text = r["text"] if rng.random() >= REMOVE else r["text"].replace(raw, " ", 1)
            drafts.append((query, passage(r, text), r["chunk_id"]))
    if not drafts:
        return []
    vectors = embedder.embed([q for q, _, _ in drafts])  # (n, dim): the dense side of the negatives
    pairs = []
    for n, (query, positive, chunk) in enumerate(drafts):
        own = section_key(by_id[chunk])
        negative = None
        for side in ("keyword", "dense") if n % 2 == 0 else ("dense", "keyword"):  # alternate; else the other
            found = store.search_keyword(query, DEPTH) if side == "keyword" else store.search_dense(vectors[n], DEPTH)
            ranked = [i for i, _ in found]
            negative = next((i for i in ranked if i != chunk and i in by_id and section_key(by_id[i]) != own), None)
            if negative is not None:
                break
        pairs.append(Pair(query, positive, chunk, None if negative is None else passage(by_id[negative]), negative))
    rng.shuffle(pairs)
    return pairs
