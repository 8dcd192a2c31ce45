"""What `dlforge serve --store FILE` keeps of each request for monitoring: its inputs (or features) and predictions.

    store = RequestStore("runs/requests.db", max_bytes=64 << 20)
    store.add("/v1/embeddings", "minilm", {"texts": [...]}, {"embeddings_b64": [...]})
    rows = store.rows(model="minilm", since=time.time() - 3600)

One SQLite table (WAL): time, route, model, the inputs and the outputs as JSON. The file is capped: when it
grows past `max_bytes`, the oldest tenth of the rows is deleted (a rolling window, as drift is measured on recent
traffic). A record larger than `max_record_bytes` keeps its shape but not its data (`truncated`). Writes come from
the server's event loop, one short transaction each; a crash loses at most the request being written.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

SCHEMA = """CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    route TEXT NOT NULL,
    model TEXT,
    inputs TEXT,      -- JSON
    outputs TEXT,     -- JSON
    truncated INTEGER NOT NULL DEFAULT 0
)"""


class RequestStore:
    def __init__(self, path: str | Path, max_bytes: int = 64 << 20, max_record_bytes: int = 256 << 10):
        self.path, self.max_bytes, self.max_record_bytes = Path(path), max_bytes, max_record_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute(SCHEMA)
        self.db.execute("CREATE INDEX IF NOT EXISTS requests_model_time ON requests (model, time)")

    def add(self, route: str, model: str | None, inputs: Any, outputs: Any) -> None:
        blob_in, blob_out = json.dumps(inputs), json.dumps(outputs)
        truncated = len(blob_in) + len(blob_out) > self.max_record_bytes
        if truncated:
            blob_in, blob_out = json.dumps(_shape(inputs)), json.dumps(_shape(outputs))
        with self.lock:
            self.db.execute("INSERT INTO requests (time, route, model, inputs, outputs, truncated) VALUES "
                            "(?, ?, ?, ?, ?, ?)", (time.time(), route, model, blob_in, blob_out, int(truncated)))
            if self._bytes() > self.max_bytes:
                self._trim()

    def _bytes(self) -> int:
        pages = self.db.execute("PRAGMA page_count").fetchone()[0] - self.db.execute("PRAGMA freelist_count"
                                                                                     ).fetchone()[0]
        return pages * self.db.execute("PRAGMA page_size").fetchone()[0]

    def _trim(self) -> None:
        """Delete the oldest rows until the live data is under 90% of the cap (freed pages are reused)."""
        while self._bytes() > 0.9 * self.max_bytes:
            count = self.db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
            if count <= 1:
                return
            self.db.execute("DELETE FROM requests WHERE id IN (SELECT id FROM requests ORDER BY id LIMIT ?)",
                            (max(1, count // 10),))

    def rows(self, model: str | None = None, since: float | None = None, limit: int | None = None
             ) -> list[dict[str, Any]]:
        sql, params = "SELECT * FROM requests WHERE 1 = 1", []
        if model is not None:
            sql, params = sql + " AND model = ?", [*params, model]
        if since is not None:
            sql, params = sql + " AND time >= ?", [*params, since]
        sql += " ORDER BY id" + (f" LIMIT {int(limit)}" if limit else "")
        with self.lock:
            cursor = self.db.execute(sql, params)
            names = [d[0] for d in cursor.description]
            found = cursor.fetchall()
        out = []
        for values in found:
            row = dict(zip(names, values, strict=True))
            row["inputs"], row["outputs"] = json.loads(row["inputs"]), json.loads(row["outputs"])
            row["truncated"] = bool(row["truncated"])
            out.append(row)
        return out

    def close(self) -> None:
        with self.lock:
            self.db.close()


def _shape(value: Any) -> Any:
    """What a record too large to keep keeps: the types and lengths of its parts."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return {"list": len(value)}
    if isinstance(value, str) and len(value) > 256:
        return {"str": len(value)}
    return value
