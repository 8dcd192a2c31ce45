"""A folder -> the index, incrementally: walk, refuse, hash, read, chunk, embed, store.

    report = index_folder("docs/", "docs.db")     # IngestReport: files read, skipped and why, chunks added/removed
    report.to_dict()                               # what `dlforge rag index --json` prints

Walk: every file under the folder, recursively, in sorted order. Read: .txt, .md, .rst, .html, .pdf, .jsonl (see
`readers`). Refused and counted, never followed or read: symlinks that lead out of the folder (a symlink inside it
is skipped too: its target is read under its own path), files over the size limit, files that are not regular
files, binary files (a NUL byte in the first 8 KiB, or more than 10% undecodable bytes), files that cannot be read
or parsed; hidden files and folders and unsupported types are skipped and counted. Text that is not UTF-8 is
decoded with U+FFFD for the bad bytes and reported by name.

Incremental: each document is keyed by its absolute path and its content SHA-256. A file whose hash is already in
the index is not read again; a changed file's chunks are replaced in one transaction; a document under the folder
whose file is gone (or now refused) is removed. Chunks are embedded in batches, and each batch is written in one
transaction, so a crash loses at most the batch in flight and the next run picks up where it stopped.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dlforge.errors import ConfigError, DataError
from dlforge.rag.chunk import Chunk, Chunker, check_chunking, embedding_text
from dlforge.rag.embed import RagEmbedder, int8_folder, load_embedder, torch_threads
from dlforge.rag.readers import file_type, read_document
from dlforge.rag.sqlite_store import open_store
from dlforge.rag.store import ChunkRecord, DocumentRecord, NoIndexError, Store
from dlforge.rag.vector_index import DTYPES
from dlforge.runs.progress import Progress

MAX_FILE_BYTES = 20 * 2**20
CHUNK_TOKENS, CHUNK_OVERLAP = 200, 32
BATCH_CHUNKS = 256  # chunks embedded and written per transaction
PROGRESS_EVERY = 30.0  # seconds between progress lines off a terminal, as in training
REASONS = {
    "symlink_escape": "symlink leading out of the folder",
    "symlink": "symlink inside the folder (its target is read under its own path)",
    "too_large": "over the size limit",
    "binary": "binary content",
    "unreadable": "cannot be read or parsed",
    "not_regular": "not a regular file",
    "empty": "no text",
    "unsupported": "not a supported type",
    "hidden": "hidden (name starts with '.')",
}


@dataclass
class IngestReport:
    root: str
    db: str
    files: int = 0  # files found that could be indexed (supported types, not refused by the walk)
    read: int = 0  # files read and chunked this time (new or changed)
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0  # documents removed: their files are gone or now refused
    chunks_added: int = 0
    chunks_removed: int = 0
    skipped: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # reason -> [{path, detail}]
    replaced: list[str] = field(default_factory=list)  # not UTF-8: decoded with replacement characters
    seconds: float = 0.0
    model_seconds: float = 0.0  # loading the embedding model, not included in `seconds`
    vector_index_rebuilt: bool = False

    def skip(self, reason: str, path: str, detail: str = "") -> None:
        self.skipped.setdefault(reason, []).append({"path": path, "detail": detail or REASONS[reason]})

    @property
    def chunks_per_s(self) -> float:
        return self.chunks_added / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["skipped_counts"] = {k: len(v) for k, v in self.skipped.items()}
        out["chunks_per_s"] = round(self.chunks_per_s, 1)
        return out


def scan(root: Path, max_bytes: int, report: IngestReport) -> list[Path]:
    """The files to index under `root` (resolved), sorted; everything refused or skipped goes into the report."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for name in sorted(dirnames):
            full = here / name
            if name.startswith("."):
                report.skip("hidden", _rel(full, root))
                dirnames.remove(name)
            elif full.is_symlink():
                report.skip("symlink" if _inside(full, root) else "symlink_escape", _rel(full, root),
                            f"symlink to {os.path.realpath(full)}")
                dirnames.remove(name)
        dirnames.sort()
        for name in sorted(filenames):
            full, rel = here / name, _rel(here / name, root)
            if name.startswith("."):
                report.skip("hidden", rel)
            elif full.is_symlink():
                report.skip("symlink" if _inside(full, root) else "symlink_escape", rel,
                            f"symlink to {os.path.realpath(full)}")
            elif file_type(full) is None:
                report.skip("unsupported", rel)
            else:
                try:
                    st = full.lstat()
                except OSError as exc:
                    report.skip("unreadable", rel, str(exc))
                    continue
                if not stat.S_ISREG(st.st_mode):
                    report.skip("not_regular", rel)
                elif st.st_size > max_bytes:
                    report.skip("too_large", rel, f"{st.st_size} bytes > limit {max_bytes}")
                else:
                    found.append(full)
    report.files = len(found)
    return found


def _inside(link: Path, root: Path) -> bool:
    return Path(os.path.realpath(link)).is_relative_to(root)


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def index_folder(folder: str | Path, db: str | Path, model: str | None = None, chunk_tokens: int | None = None,
                 chunk_overlap: int | None = None, max_file_bytes: int = MAX_FILE_BYTES,
                 vector_dtype: str | None = None, embedder: RagEmbedder | None = None, threads: int | None = None,
                 progress: Callable[[IngestReport], None] | None = None, progress_every: float = PROGRESS_EVERY,
                 precision: str | None = None) -> IngestReport:
    """Bring the index at `db` in step with `folder` (see the module docstring). `model`, `chunk_tokens`,
    `chunk_overlap`, `vector_dtype` (f32, f16, bf16: how the HNSW index stores vectors) set up a new index (defaults:
    all-MiniLM-L6-v2, 200, 32 or a quarter of smaller chunks, f32); an existing index keeps its own and refuses
    others; so does `precision` (the embedder's: fp32, or int8, `dlforge.rag.embed_int8`). `threads`: torch threads
    for the embedding (default: torch's setting, one per core; fewer is faster when the cores are busy). `progress`
    is called after each written batch. The files done are shown on stderr as they go (`dlforge.runs.progress`): a
    bar on a terminal, else a line every `progress_every` seconds.
    Every option is checked before anything is written: a refused call leaves no trace."""
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads}: expected at least 1")
    if max_file_bytes <= 0:
        raise ConfigError(f"--max-file-mb {max_file_bytes / 2**20:g}: expected a size above 0")
    if progress_every < 0:
        raise ConfigError(f"--progress-every {progress_every:g}: expected a number of seconds >= 0")
    if vector_dtype is not None and vector_dtype not in DTYPES:
        raise ConfigError(f"--vector-dtype {vector_dtype}: expected one of {', '.join(DTYPES)}")
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"{folder}: no such folder")
    db = Path(db).expanduser().resolve()
    report = IngestReport(str(root), str(db))
    built = _existing_settings(db)
    chunking = _chunking(built, chunk_tokens, chunk_overlap)
    if built and vector_dtype not in (None, built["ann"]["dtype"]):
        raise ConfigError(f"--vector-dtype {vector_dtype}: the index was built with {built['ann']['dtype']}; index "
                          f"into a new --db to change it")
    was = (built["embedder"].get("precision") or "fp32") if built else None
    if built and precision not in (None, was):
        raise ConfigError(f"--embedder {precision}: the index was built with {was} embeddings; index into a new --db "
                          "to change it")
    t0 = time.perf_counter()
    if embedder is None:
        from dlforge.rag.embed_int8 import with_precision

        embedder = with_precision(load_embedder(model or (built["embedder"]["source"] if built else None)),
                                  precision or was or "fp32", int8_folder(db))
    report.model_seconds = time.perf_counter() - t0
    if not built:
        _check_room(chunking["max_tokens"], embedder)
    create = {"embedder": embedder.identity(), "chunking": chunking, "ann": {"dtype": vector_dtype or "f32"}}
    t0 = time.perf_counter()
    with torch_threads(threads), open_store(db, create=create, writer=True) as store:
        store.check_embedder(embedder.identity())
        existing = store.documents(under=str(root))
        files = scan(root, max_file_bytes, report)
        kept = set()
        with Progress("rag index", total=len(files), unit="files", every_s=progress_every) as shown:
            run = _Ingest(store, embedder, Chunker(embedder.tokenizer, chunking["max_tokens"], chunking["overlap"]),
                          report, progress, shown)
            for path in files:
                if run.add(path, _rel(path, root), existing.get(str(path))):
                    kept.add(str(path))
            run.flush()
        gone = sorted(set(existing) - kept)
        report.chunks_removed += store.write([], gone)[1] if gone else 0
        report.removed = len(gone)
        report.vector_index_rebuilt = bool(getattr(store, "rebuilt", False))
    report.seconds = time.perf_counter() - t0
    return report


def _existing_settings(db: Path) -> dict[str, Any] | None:
    try:
        with open_store(db) as store:
            return store.settings()
    except NoIndexError:
        return None


def _chunking(built: dict[str, Any] | None, tokens: int | None, overlap: int | None) -> dict[str, int]:
    """The chunk sizes: an index's own (which refuses others), or those given (checked) for a new one."""
    if built:
        have = built["chunking"]
        for key, value in (("max_tokens", tokens), ("overlap", overlap)):
            if value is not None and value != have[key]:
                flag = "--chunk-tokens" if key == "max_tokens" else "--chunk-overlap"
                raise ConfigError(f"{flag} {value}: the index was built with {have[key]}; index into a new --db "
                                  f"to change it")
        return have
    tokens = CHUNK_TOKENS if tokens is None else tokens
    default_overlap = min(CHUNK_OVERLAP, tokens // 4)  # small chunks overlap by a quarter
    chunking = {"max_tokens": tokens, "overlap": default_overlap if overlap is None else overlap}
    check_chunking(chunking["max_tokens"], chunking["overlap"])
    return chunking


def _check_room(tokens: int, embedder: RagEmbedder) -> None:
    room = embedder.max_tokens - 2 - 48  # [CLS] and [SEP], and the heading context in front of the chunk
    if tokens > room:
        raise ConfigError(f"--chunk-tokens {tokens}: the embedding model {embedder.name} reads "
                          f"{embedder.max_tokens} tokens; use at most {room}")


class _Ingest:
    """One pass: read the files one by one, embed and write their chunks in batches."""

    def __init__(self, store: Store, embedder: RagEmbedder, chunker: Chunker, report: IngestReport,
                 progress: Callable[[IngestReport], None] | None, shown: Progress):
        self.store, self.embedder, self.chunker, self.report, self.progress = store, embedder, chunker, report, progress
        self.shown, self.files_done = shown, 0  # a file is done once it is written, skipped or refused
        self.pending: list[tuple[DocumentRecord, list[Chunk]]] = []

    def add(self, path: Path, rel: str, known_sha: str | None) -> bool:
        """Read `path` unless its content is already indexed; False when it is refused (then it leaves the index)."""
        before = len(self.pending)
        kept = self._read(path, rel, known_sha)
        if len(self.pending) == before:  # unchanged or refused: done with it now
            self._done(1)
        elif sum(len(c) for _, c in self.pending) >= BATCH_CHUNKS:
            self.flush()
        return kept

    def _read(self, path: Path, rel: str, known_sha: str | None) -> bool:
        """Add a new or changed file's document and chunks to the pending batch; False when it is refused."""
        report = self.report
        try:
            data = path.read_bytes()
            mtime = path.stat().st_mtime
        except OSError as exc:
            report.skip("unreadable", rel, exc.strerror or str(exc))
            return False
        sha = hashlib.sha256(data).hexdigest()
        if sha == known_sha:
            report.unchanged += 1
            return True
        kind = file_type(path)
        if kind != "pdf" and b"\0" in data[:8192]:
            report.skip("binary", rel, "NUL bytes in the first 8 KiB")
            return False
        try:
            doc = read_document(path, data)
        except DataError as exc:
            report.skip("unreadable", rel, str(exc))
            return False
        if doc.replaced and doc.text.count("\ufffd") > 0.1 * len(doc.text):
            report.skip("binary", rel, "more than 10% of the bytes are not UTF-8 text")
            return False
        chunks = self.chunker.chunk(doc)
        if not chunks:
            report.skip("empty", rel)
            return False
        if doc.replaced:
            report.replaced.append(rel)
        report.read += 1
        if known_sha is None:
            report.added += 1
        else:
            report.updated += 1
        self.pending.append((DocumentRecord(str(path), rel, kind, doc.title, sha, len(data), mtime, doc.text), chunks))
        return True

    def _done(self, files: int) -> None:
        self.files_done += files
        self.shown.update(self.files_done)

    def flush(self) -> None:
        """Embed the pending chunks and write their documents in one transaction."""
        if not self.pending:
            return
        texts = [embedding_text(c, doc.title) for doc, chunks in self.pending for c in chunks]
        vectors = self.embedder.embed(texts)
        upserts, at = [], 0
        for doc, chunks in self.pending:
            records = [ChunkRecord(c.text, c.heading, c.start, c.end, c.tokens, c.meta) for c in chunks]
            upserts.append((doc, records, vectors[at:at + len(chunks)]))
            at += len(chunks)
        added, removed = self.store.write(upserts, [])
        self._done(len(self.pending))
        self.pending = []
        self.report.chunks_added += added
        self.report.chunks_removed += removed
        if self.progress:
            self.progress(self.report)
