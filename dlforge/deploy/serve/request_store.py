"""What `dlforge serve --store FILE` keeps of each request for monitoring: its inputs (or features) and predictions.

    store = RequestStore("runs/requests.db", max_bytes=64 << 20)
    store.add("/v1/embeddings", "minilm", {"texts": [...]}, {"embeddings_b64": [...]})
    rows = store.rows(model="minilm", since=time.time() - 3600)

One SQLite table, written as the run registry is (`WalDatabase`: WAL, one short transaction a write, retried while
locked): time, route, model, the inputs and the outputs as JSON. The file is capped: when it
grows past `max_bytes`, the oldest tenth of the rows is deleted (a rolling window, as drift is measured on recent
traffic). A record larger than `max_record_bytes` keeps its shape but not its data (`truncated`). Writes come from
the server's event loop; a crash loses at most the request being written.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from dlforge.runs.registry import WalDatabase

SCHEMA = """CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    route TEXT NOT NULL,
    model TEXT,
    inputs TEXT,      -- JSON
    outputs TEXT,     -- JSON
    truncated INTEGER NOT NULL DEFAULT 0
)"""


class RequestStore(WalDatabase):
    SCHEMA = (SCHEMA, "CREATE INDEX IF NOT EXISTS requests_model_time ON requests (model, time)")

    def __init__(self, path: str | Path, max_bytes: int = 64 << 20, max_record_bytes: int = 256 << 10):
        self.max_bytes, self.max_record_bytes = max_bytes, max_record_bytes
        super().__init__(Path(path))

    def add(self, route: str, model: str | None, inputs: Any, outputs: Any) -> None:
        blob_in, blob_out = json.dumps(inputs), json.dumps(outputs)
        truncated = len(blob_in) + len(blob_out) > self.max_record_bytes
        if truncated:
            blob_in, blob_out = json.dumps(_shape(inputs)), json.dumps(_shape(outputs))

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO requests (time, route, model, inputs, outputs, truncated) VALUES "
                         "(?, ?, ?, ?, ?, ?)", (time.time(), route, model, blob_in, blob_out, int(truncated)))
            if _bytes(conn) > self.max_bytes:  # past the cap: down to 90% of it, oldest first
                while _bytes(conn) > 0.9 * self.max_bytes and _trim(conn):
                    pass

        self._write(insert)

    def _bytes(self) -> int:
        """The bytes the live rows take (pages in use, freed ones aside)."""
        return self._retry(_bytes)

    def rows(self, model: str | None = None, since: float | None = None, limit: int | None = None
             ) -> list[dict[str, Any]]:
        sql, params = "SELECT * FROM requests WHERE 1 = 1", []
        if model is not None:
            sql, params = sql + " AND model = ?", [*params, model]
        if since is not None:
            sql, params = sql + " AND time >= ?", [*params, since]
        sql += " ORDER BY id" + (f" LIMIT {int(limit)}" if limit else "")
        out = []
        for row in self._retry(lambda conn: conn.execute(sql, params).fetchall()):
            record = dict(row)
            record["inputs"], record["outputs"] = json.loads(record["inputs"]), json.loads(record["outputs"])
            record["truncated"] = bool(record["truncated"])
            out.append(record)
        return out

    def close(self) -> None:
        """Nothing to close: each call opens and closes its own connection."""


def _bytes(conn: sqlite3.Connection) -> int:
    pages = conn.execute("PRAGMA page_count").fetchone()[0] - conn.execute("PRAGMA freelist_count").fetchone()[0]
    return pages * conn.execute("PRAGMA page_size").fetchone()[0]


def _trim(conn: sqlite3.Connection) -> bool:
    """Delete the oldest tenth of the rows (freed pages are reused); False when one row or none is left."""
    count = conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    if count <= 1:
        return False
    conn.execute("DELETE FROM requests WHERE id IN (SELECT id FROM requests ORDER BY id LIMIT ?)",
                 (max(1, count // 10),))
    return True


def _shape(value: Any) -> Any:
    """What a record too large to keep keeps: the types and lengths of its parts."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return {"list": len(value)}
    if isinstance(value, str) and len(value) > 256:
        return {"str": len(value)}
    return value
