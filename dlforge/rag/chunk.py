"""Documents -> chunks, counted in tokens of the embedding model's own tokenizer.

    chunker = Chunker(embedder.tokenizer, max_tokens=200, overlap=32)
    for c in chunker.chunk(doc):
        c.text == doc.text[c.start:c.end]; c.heading; c.tokens

A section (a heading and its text, see `readers`) that fits in `max_tokens` is one chunk: paragraphs and their
heading stay together. A longer section is cut into windows of at most `max_tokens` tokens; each cut falls at the
last paragraph break in the second half of the window if there is one, else at a sentence end, a line break or a
word boundary, and the next window starts up to `overlap` tokens earlier, at a sentence or word start. Chunks never
cross sections, so a chunk's heading path says exactly where its text sits.

What gets embedded is the chunk with its context in front (`embedding_text`): the heading path it sits under (or
the document title when there are no headings), so a chunk deep in a long section still knows its topic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from dlforge.errors import ConfigError
from dlforge.rag.readers import Document

SENTENCE_END = re.compile(r"[.!?:;][\"')\]]*$")
CONTEXT_SEP = " > "
MAX_CONTEXT_CHARS = 240  # about 50 tokens: the heading context never crowds out the chunk in the model's window


@dataclass
class Chunk:
    text: str
    heading: tuple[str, ...]
    start: int  # character span in the document's text
    end: int
    tokens: int
    first: bool  # the chunk begins its section (so it holds the section's heading line)
    meta: dict[str, Any] | None = None


def check_chunking(max_tokens: int, overlap: int) -> None:
    """ConfigError naming the option unless chunks of `max_tokens` (at least 8) overlap by 0 <= `overlap` <
    max_tokens / 2 tokens."""
    if max_tokens < 8:
        raise ConfigError(f"--chunk-tokens {max_tokens}: expected at least 8 tokens")
    if not 0 <= overlap < max_tokens // 2:
        raise ConfigError(f"--chunk-overlap {overlap}: expected 0 <= overlap < chunk tokens / 2 = {max_tokens // 2}")


class Chunker:
    """Token-counted chunking with overlap (see the module docstring). `tokenizer` is a `tokenizers.Tokenizer`."""

    def __init__(self, tokenizer: Any, max_tokens: int = 200, overlap: int = 32):
        check_chunking(max_tokens, overlap)
        self.tokenizer = tokenizer
        self.max_tokens, self.overlap = max_tokens, overlap

    def chunk(self, doc: Document) -> list[Chunk]:
        chunks = []
        for section in doc.sections:
            span = doc.text[section.start:section.end]
            offsets = [o for o in self.tokenizer.encode(span, add_special_tokens=False).offsets if o[1] > o[0]]
            for i, e in self._windows(span, offsets):
                start, end = section.start + offsets[i][0], section.start + offsets[e - 1][1]
                chunks.append(Chunk(doc.text[start:end], section.heading, start, end, e - i, i == 0, section.meta))
        return chunks

    def _windows(self, span: str, offsets: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Token windows [i, e) covering the span: cut where the text breaks naturally, overlap at a sentence start."""
        n = len(offsets)

        def gap(k: int) -> str:  # the text between token k-1 and token k
            return span[offsets[k - 1][1]:offsets[k][0]]

        def sentence_start(k: int) -> bool:  # token k starts a line, or follows a sentence's last token
            previous = span[offsets[k - 1][0]:offsets[k - 1][1]]
            return "\n" in gap(k) or (bool(gap(k)) and bool(SENTENCE_END.search(previous)))

        windows, i = [], 0
        while i < n:
            e = min(i + self.max_tokens, n)
            if e < n:
                lo = i + max(1, (e - i) // 2)
                candidates = range(e, lo, -1)
                e = (next((k for k in candidates if "\n\n" in gap(k)), None)
                     or next((k for k in candidates if sentence_start(k)), None)
                     or next((k for k in candidates if gap(k)), None)
                     or e)
            windows.append((i, e))
            if e >= n:
                break
            nxt = max(e - self.overlap, i + 1)
            later = range(nxt, e)
            i = next((k for k in later if sentence_start(k)), None) or next((k for k in later if gap(k)), None) or e
        return windows


def embedding_text(chunk: Chunk, title: str) -> str:
    """The text the embedding model sees: the heading context, a blank line, the chunk. The first chunk of a section
    already starts with its own heading, so only the headings above it are added."""
    context = chunk.heading[:-1] if chunk.first else chunk.heading
    if not chunk.heading:
        context = (title,) if title else ()
    prefix = CONTEXT_SEP.join(context)
    if len(prefix) > MAX_CONTEXT_CHARS:
        prefix = "..." + prefix[-MAX_CONTEXT_CHARS:]
    return f"{prefix}\n\n{chunk.text}" if prefix else chunk.text
