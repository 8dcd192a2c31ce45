"""The embedded store: SQLite (WAL) for documents, chunks and their vectors, FTS5 for BM25, usearch HNSW beside it.

Files: `docs.db` (with `docs.db-wal`, `docs.db-shm` while open), `docs.db.<generation>.usearch` (the saved HNSW
graph), `docs.db.lock` (held by the one process writing).

SQLite is the source of truth; the HNSW file is a cache of the vectors SQLite holds. Every transaction that changes
chunks adds one to `generation` (in meta, in the same transaction). Saving the vector index writes
`docs.db.<generation>.usearch` atomically (temp file, fsync, rename) and only then records `ann_generation` in
SQLite. On open, the file is used only when `ann_generation == generation`, the file named by it exists, reads back
and holds exactly as many vectors as there are chunk rows; otherwise the index is rebuilt from the vectors in SQLite
(and saved when no other process is writing). So a `kill -9` at any point leaves a store that opens with as many
vectors as rows: before a commit SQLite rolls the transaction back, after it the stale index file is ignored.
Re-ingesting adds no duplicates because documents are keyed by path and a document's chunks are replaced in the
same transaction as its row. Chunk ids come from AUTOINCREMENT and are never reused, so an index key always names
the chunk it was built from.

Keyword search: an external-content FTS5 table over (heading, text), kept in step by triggers, Porter stemming.
The question's words become quoted FTS5 terms joined by OR (English stop words dropped), so any text is a valid query.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dlforge.errors import DataError
from dlforge.rag.fusion import Fusion
from dlforge.rag.store import STOPWORDS, ChunkRecord, DocumentRecord, Filters, NoIndexError, Store
from dlforge.rag.vector_index import DEFAULTS, VectorIndex
from dlforge.runs.rundir import atomic_write_bytes

SCHEMA_VERSION = 1
FTS_TOKENIZER = "porter unicode61 remove_diacritics 2"  # FTS5: Porter stemming over Unicode words, accents folded
SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE documents (
    id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL UNIQUE, relpath TEXT NOT NULL, type TEXT NOT NULL,
    title TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL, mtime REAL NOT NULL, text TEXT NOT NULL,
    indexed_at REAL NOT NULL);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ord INTEGER NOT NULL, heading TEXT NOT NULL, text TEXT NOT NULL, start_char INTEGER NOT NULL,
    end_char INTEGER NOT NULL, tokens INTEGER NOT NULL, meta TEXT, vector BLOB NOT NULL);
CREATE INDEX chunks_doc ON chunks(doc_id);
CREATE VIRTUAL TABLE chunks_fts USING fts5(heading, text, content='chunks', content_rowid='id',
    tokenize='{FTS_TOKENIZER}');
CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, heading, text) VALUES (new.id, new.heading, new.text); END;
CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, heading, text) VALUES ('delete', old.id, old.heading, old.text); END;
"""
EXACT_FILTER_LIMIT = 20_000  # a filter that leaves this few chunks is searched exactly rather than through HNSW
IN_BATCH = 500  # ids per "IN (...)" lookup


def fts_query(question: str) -> str | None:
    """The question as an FTS5 query: each distinct word quoted (so no word is FTS5 syntax), joined by OR."""
    words = re.findall(r"\w+", question.lower())
    terms = [w for w in words if w not in STOPWORDS] or words
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(terms)) or None


class SQLiteStore(Store):
    def __init__(self, path: Path, create: dict[str, Any] | None = None, writer: bool = False):
        self.path = Path(path)
        self.writer = writer
        self.rebuilt = False  # the vector index was rebuilt from SQLite on this open
        self._ann: VectorIndex | None = None
        self._lock = None
        missing = NoIndexError(f"{self.path}: no such index; build one with `dlforge rag index FOLDER --db "
                               f"{self.path}`")
        if not _holds_index(self.path) and create is None:
            raise missing
        if create is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if writer:
            self._lock = _acquire_lock(self.path.with_name(self.path.name + ".lock"))
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA foreign_keys=ON")
            # an empty database: new, or one whose creation was killed before it committed
            if self.db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                if create is None:
                    raise missing
                self.db.execute("PRAGMA journal_mode=WAL")
                self._create(create)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            row = self.db.execute("SELECT value FROM meta WHERE key='settings'").fetchone()
        except DataError:
            self._release()
            raise
        except sqlite3.DatabaseError as exc:
            self._release()
            raise DataError(f"{self.path}: not a dlforge RAG index ({exc})") from exc
        if row is None:
            self._release()
            raise DataError(f"{self.path}: not a dlforge RAG index (no settings in its meta table)")
        self._settings = json.loads(row[0])
        if self._settings.get("schema") != SCHEMA_VERSION:
            self._release()
            raise DataError(f"{self.path}: index schema {self._settings.get('schema')}, this dlforge reads "
                            f"{SCHEMA_VERSION}; re-index into a new --db")
        self.dim = int(self._settings["embedder"]["dim"])

    def _create(self, settings: dict[str, Any]) -> None:
        settings = {"schema": SCHEMA_VERSION, **settings, "ann": {**DEFAULTS, **settings.get("ann", {})}}
        with self._transaction():
            try:
                for statement in SCHEMA.split(";\n"):
                    if statement.strip():
                        self.db.execute(statement)
            except sqlite3.OperationalError as exc:
                if "fts5" in str(exc):
                    raise DataError(f"{self.path}: this Python's SQLite has no FTS5 (needed for keyword search)"
                                    ) from exc
                raise
            self.db.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("settings", json.dumps(settings)), ("generation", "0"), ("ann_generation", "-1")])

    # --- transactions, locks, meta ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self, write: bool = True) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _meta_int(self, key: str) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0])

    def _set_meta(self, key: str, value: Any) -> None:
        self.db.execute("UPDATE meta SET value=? WHERE key=?", (str(value), key))

    def _release(self) -> None:
        if getattr(self, "db", None) is not None:
            self.db.close()
            self.db = None
        if self._lock is not None:
            self._lock.close()  # closing the file drops the flock
            self._lock = None

    def settings(self) -> dict[str, Any]:
        return self._settings

    def update_settings(self, key: str, value: Any) -> None:
        if not self.writer:
            raise DataError(f"{self.path}: opened for reading only")
        if key in ("schema", "embedder", "chunking", "ann"):
            raise ValueError(f"settings[{key!r}] is fixed when the index is built")
        with self._transaction():
            row = self.db.execute("SELECT value FROM meta WHERE key='settings'").fetchone()
            settings = {**json.loads(row[0]), key: value}  # re-read: another writer may have changed it
            self.db.execute("UPDATE meta SET value=? WHERE key='settings'", (json.dumps(settings),))
        self._settings = settings

    # --- the vector index: load, rebuild, save -------------------------------------------------------------------

    def ann_path(self, generation: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{generation}.usearch")

    @property
    def ann(self) -> VectorIndex:
        if self._ann is None:
            self._ann = self._load_ann()
        return self._ann

    def _ann_settings(self) -> dict[str, Any]:
        """The graph's settings as built, with the ef that `tune_ann` chose (settings["ann_tuned"]) if any."""
        tuned = self._settings.get("ann_tuned")
        return {**self._settings["ann"], **({"expansion_search": tuned["expansion_search"]} if tuned else {})}

    def tune_ann(self, target: float, k: int = 10, sample: int = 500, seed: int = 0) -> dict[str, Any]:
        """Choose the smallest ef reaching recall@k >= `target` on `sample` questions made up near stored vectors
        (VectorIndex.calibrate) and record it in settings["ann_tuned"], used from then on by every process opening
        the index (rerun it after the index has grown a lot)."""
        if not 0 < target <= 1:
            raise DataError(f"target recall {target}: expected a number in (0, 1]")
        ef, reached = self.ann.calibrate(target, k, sample, seed)
        tuned = {"expansion_search": ef, "target_recall": target, "recall": round(reached, 4), "k": k,
                 "queries": min(sample, len(self.ann)), "vectors": len(self.ann)}
        self.update_settings("ann_tuned", tuned)
        self.ann.ef = ef
        return tuned

    def _load_ann(self) -> VectorIndex:
        settings = self._ann_settings()
        with self._transaction(write=False):  # one snapshot: the counters and the rows agree
            generation, saved = self._meta_int("generation"), self._meta_int("ann_generation")
            rows = self.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
            if saved == generation and self.ann_path(saved).exists():
                with contextlib.suppress(DataError, OSError):
                    index = VectorIndex.from_bytes(self.ann_path(saved).read_bytes(), self.dim, **settings)
                    if len(index) == rows:
                        return index
            index = VectorIndex(self.dim, **settings)
            cursor = self.db.execute("SELECT id, vector FROM chunks ORDER BY id")
            while batch := cursor.fetchmany(8192):
                index.add(np.array([r[0] for r in batch]), self._unpack([r[1] for r in batch]))
        self.rebuilt = rows > 0
        if self.writer:
            self._save_ann(index, force=True)
        else:  # a reader repairs the saved index too, when nobody is writing and it may write there
            with contextlib.suppress(DataError, OSError, sqlite3.Error):
                lock = _acquire_lock(self.path.with_name(self.path.name + ".lock"))
                try:
                    if self._meta_int("generation") == generation:
                        self._save_ann(index, force=True)
                finally:
                    lock.close()
        return index

    def _save_ann(self, index: VectorIndex, force: bool = False) -> None:
        """Write the index file for the current generation, then record it (the caller holds the write lock).
        Without `force`, a file already recorded for this generation is kept."""
        generation = self._meta_int("generation")
        if not force and self._meta_int("ann_generation") == generation and self.ann_path(generation).exists():
            return
        atomic_write_bytes(self.ann_path(generation), index.to_bytes())
        with self._transaction():
            self._set_meta("ann_generation", generation)
        for stale in self.path.parent.glob(f"{glob_escape(self.path.name)}.*.usearch"):
            if stale != self.ann_path(generation):
                stale.unlink(missing_ok=True)
        for tmp in self.path.parent.glob(f".{glob_escape(self.path.name)}.*.usearch.*.tmp"):
            tmp.unlink(missing_ok=True)  # left by a save that was killed

    def _unpack(self, blobs: list[bytes]) -> np.ndarray:
        return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), self.dim)

    # --- writing -------------------------------------------------------------------------------------------------

    def documents(self, under: str | None = None) -> dict[str, str]:
        rows = self.db.execute("SELECT path, sha256 FROM documents").fetchall()
        prefix = None if under is None else under.rstrip("/") + "/"
        return {p: h for p, h in rows if prefix is None or p.startswith(prefix)}

    def write(self, upserts: list[tuple[DocumentRecord, list[ChunkRecord], np.ndarray]], delete: list[str]
              ) -> tuple[int, int]:
        if not self.writer:
            raise DataError(f"{self.path}: opened for reading only")
        index = self.ann  # loaded (or rebuilt) before SQLite changes, so that it can follow them
        removed: list[int] = []
        added: list[int] = []
        vectors = []
        now = time.time()
        with self._transaction():
            for path in [*delete, *(doc.path for doc, _, _ in upserts)]:
                row = self.db.execute("SELECT id FROM documents WHERE path=?", (path,)).fetchone()
                if row:
                    removed += [r[0] for r in self.db.execute("SELECT id FROM chunks WHERE doc_id=?", row)]
                    self.db.execute("DELETE FROM chunks WHERE doc_id=?", row)
                    self.db.execute("DELETE FROM documents WHERE id=?", row)
            for doc, chunks, vecs in upserts:
                vecs = np.ascontiguousarray(vecs, dtype=np.float32)
                if vecs.shape != (len(chunks), self.dim) or not np.isfinite(vecs).all():
                    raise DataError(f"{doc.path}: expected {len(chunks)} finite vectors of {self.dim} dimensions, "
                                    f"got an array of shape {vecs.shape}")
                doc_id = self.db.execute(
                    "INSERT INTO documents (path, relpath, type, title, sha256, size, mtime, text, indexed_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (doc.path, doc.relpath, doc.type, doc.title, doc.sha256, doc.size, doc.mtime, doc.text, now),
                ).lastrowid
                for ord_, (c, v) in enumerate(zip(chunks, vecs, strict=True)):
                    added.append(self.db.execute(
                        "INSERT INTO chunks (doc_id, ord, heading, text, start_char, end_char, tokens, meta, vector) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (doc_id, ord_, json.dumps(list(c.heading), ensure_ascii=False), c.text, c.start, c.end,
                         c.tokens, json.dumps(c.meta, ensure_ascii=False) if c.meta else None, v.tobytes()),
                    ).lastrowid)
                vectors.append(vecs)
            if removed or added:
                self._set_meta("generation", self._meta_int("generation") + 1)
        try:
            index.remove(np.array(removed, dtype=np.int64))
            index.add(np.array(added, dtype=np.int64), np.concatenate(vectors) if vectors else np.zeros((0, self.dim)))
        except BaseException:
            self._ann = None  # out of step with SQLite now: rebuilt on next use
            raise
        return len(added), len(removed)

    def flush(self) -> None:
        if self.writer and self._ann is not None:
            self._save_ann(self._ann)

    def close(self) -> None:
        if getattr(self, "db", None) is None:
            return
        try:
            self.flush()
            if self.writer:
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._release()

    # --- searching -----------------------------------------------------------------------------------------------

    def _where(self, filters: Filters | None) -> tuple[str, list[Any]]:
        clauses, params = [], []
        if filters and filters.path:
            clauses.append("(d.relpath GLOB ? OR d.path GLOB ?)")
            params += [filters.path, filters.path]
        if filters and filters.types:
            clauses.append(f"d.type IN ({', '.join('?' * len(filters.types))})")
            params += list(filters.types)
        return " AND ".join(clauses), params

    def search_dense(self, vector: np.ndarray, k: int, filters: Filters | None = None, exact: bool = False
                     ) -> list[tuple[int, float]]:
        if not filters:
            ids, scores = self.ann.search(vector, k, exact=exact)
            return list(zip(ids.tolist(), scores.tolist(), strict=True))
        where, params = self._where(filters)
        base = f"FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE {where}"
        allowed = {r[0] for r in self.db.execute(f"SELECT c.id {base}", params)}
        if exact or len(allowed) <= EXACT_FILTER_LIMIT:  # brute force over the few chunks the filter leaves
            rows = self.db.execute(f"SELECT c.id, c.vector {base}", params).fetchall()
            if not rows:
                return []
            scores = self._unpack([r[1] for r in rows]) @ np.asarray(vector, dtype=np.float32)  # (n,)
            top = np.argsort(-scores, kind="stable")[:k]
            return [(rows[i][0], float(scores[i])) for i in top]
        want = k * 8
        while True:  # HNSW, asking for more neighbours until k of them pass the filter
            ids, scores = self.ann.search(vector, want)
            hits = [(i, s) for i, s in zip(ids.tolist(), scores.tolist(), strict=True) if i in allowed]
            if len(hits) >= k or want >= len(self.ann):
                return hits[:k]
            want *= 4

    def search_keyword(self, question: str, k: int, filters: Filters | None = None) -> list[tuple[int, float]]:
        query = fts_query(question)
        if query is None:
            return []
        where, params = self._where(filters)
        join = f"JOIN chunks c ON c.id = f.rowid JOIN documents d ON d.id = c.doc_id AND {where}" if where else ""
        rows = self.db.execute(
            f"SELECT f.rowid, bm25(chunks_fts) AS s FROM chunks_fts f {join} WHERE chunks_fts MATCH ? "
            f"ORDER BY s LIMIT ?", [*params, query, k]).fetchall()
        return [(r[0], -float(r[1])) for r in rows]

    def chunk_ids(self) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT id FROM chunks ORDER BY doc_id, ord")]

    def records(self, ids: list[int]) -> list[dict[str, Any]]:
        found = {}
        for i in range(0, len(ids), IN_BATCH):
            part = ids[i:i + IN_BATCH]
            for r in self.db.execute(
                    "SELECT c.id, c.text, c.doc_id, d.path, d.relpath, d.title, d.type, c.heading, c.start_char, "
                    f"c.end_char, c.tokens, c.meta FROM chunks c JOIN documents d ON d.id = c.doc_id "
                    f"WHERE c.id IN ({', '.join('?' * len(part))})", part):
                found[r[0]] = {"chunk_id": r[0], "text": r[1], "doc_id": r[2], "source": r[3], "relpath": r[4],
                               "title": r[5], "type": r[6], "heading": json.loads(r[7]), "start": r[8],
                               "end": r[9], "tokens": r[10], "meta": json.loads(r[11]) if r[11] else None}
        return [found[i] for i in ids if i in found]  # a chunk deleted since the search is left out

    def vectors(self, ids: list[int]) -> np.ndarray:
        found = {}
        for i in range(0, len(ids), IN_BATCH):
            part = ids[i:i + IN_BATCH]
            found.update(self.db.execute(
                f"SELECT id, vector FROM chunks WHERE id IN ({', '.join('?' * len(part))})", part).fetchall())
        missing = [i for i in ids if i not in found]
        if missing:
            raise DataError(f"{self.path}: no chunk with id {missing[0]}")
        return self._unpack([found[i] for i in ids]) if ids else np.zeros((0, self.dim), np.float32)

    def stats(self) -> dict[str, Any]:
        generation, saved = self._meta_int("generation"), self._meta_int("ann_generation")
        docs, chunks, tokens = self.db.execute(
            "SELECT (SELECT count(*) FROM documents), count(*), coalesce(sum(tokens), 0) FROM chunks").fetchone()
        types = dict(self.db.execute("SELECT type, count(*) FROM documents GROUP BY type ORDER BY type").fetchall())
        ann_file = self.ann_path(saved)
        size = sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())
        return {
            "db": str(self.path), "documents": docs, "chunks": chunks, "tokens": tokens, "types": types,
            "embedder": self._settings["embedder"], "chunking": self._settings.get("chunking"),
            "fusion": Fusion.of(self._settings).to_dict(),
            "vector_index": {"kind": "usearch HNSW (inner product)", **self._ann_settings(),
                             "tuned": self._settings.get("ann_tuned"),
                             "file": str(ann_file) if ann_file.exists() else None,
                             "in_sync": saved == generation and ann_file.exists(), "generation": generation},
            "bytes": {"sqlite": size, "vector_index": ann_file.stat().st_size if ann_file.exists() else 0},
        }


def _holds_index(path: Path) -> bool:
    """Whether `path` holds a dlforge index (True) or nothing yet (False: no file, or an empty database, such as one
    whose creation was killed). Anything else is refused with a DataError, having been opened read-only: another
    application's database is never switched to WAL, locked or written."""
    if not path.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                return False
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "meta" not in tables or db.execute("SELECT 1 FROM meta WHERE key='settings'").fetchone() is None:
                raise DataError(f"{path}: not a dlforge RAG index (no settings in a meta table; another application's "
                                "database?)")
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{path}: not a dlforge RAG index ({exc})") from exc
    return True


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _acquire_lock(path: Path):
    """An exclusive, non-blocking lock on `path` (flock), held while the returned file stays open."""
    handle = open(path, "a+b")  # noqa: SIM115 - kept open: the lock lives as long as the file
    try:
        import fcntl
    except ImportError:  # no flock on this platform (Windows): one writer at a time is up to the user
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        raise DataError(f"{path.with_suffix('')}: another process is writing to this index (lock {path} held); "
                        f"wait for it to finish") from exc
    return handle


def open_store(path: str | Path, create: dict[str, Any] | None = None, writer: bool = False) -> Store:
    """Open the index at `path` (SQLite + usearch), the embedded default backend. `create`: the settings for a new
    index (None: it must exist). `writer`: take the index's write lock (one writer at a time; readers never wait).
    A server backend (pgvector, Qdrant) is another `Store` subclass this picks by the form of `path`:
    docs/guides/rag.md."""
    return SQLiteStore(Path(path), create=create, writer=writer)
