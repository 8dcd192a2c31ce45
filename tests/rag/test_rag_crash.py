"""kill -9 in the middle of `dlforge rag index`, twice, then a full re-ingest: the index opens, has as many vectors as
rows, holds no duplicates, and ends up identical to an index built in one go."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time

import numpy as np
from clitools import ENV, dlforge_cmd
from ragtools import tiny_st_model, write_files

from dlforge.rag.ingest import index_folder
from dlforge.rag.sqlite_store import open_store

FILES = 400


def corpus(root):
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    files = {}
    for i in range(FILES):
        paragraphs = [" ".join(words[(i + j + k) % len(words)] for k in range(24)) + f" file {i} part {j}."
                      for j in range(4)]
        files[f"d{i // 50}/f{i:03d}.md"] = f"# File {i}\n\n" + "\n\n".join(paragraphs) + "\n"
    return write_files(root, files)


def documents(db) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT count(*) FROM documents").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0  # not created yet


def kill_when(cmd, db, at_least: int) -> int:
    """Start `cmd`, SIGKILL it once `at_least` documents are committed; the count when it died."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while proc.poll() is None and time.time() < deadline and documents(db) < at_least:
            time.sleep(0.005)
        assert proc.poll() is None, f"ingestion ended before it could be killed: {proc.stderr.read()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return documents(db)


def snapshot(db):
    with open_store(db) as s:
        assert len(s.ann) == s.db.execute("SELECT count(*) FROM chunks").fetchone()[0]  # as many vectors as rows
        s.db.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('integrity-check')")
        assert s.db.execute("SELECT count(*) FROM (SELECT path FROM documents GROUP BY path HAVING count(*) > 1)"
                            ).fetchone()[0] == 0
        rows = s.db.execute("SELECT d.relpath, c.ord, c.text, c.id FROM chunks c JOIN documents d ON d.id = c.doc_id "
                            "ORDER BY d.relpath, c.ord").fetchall()
        vectors = s.vectors([r[3] for r in rows])
        return [r[:3] for r in rows], vectors


def test_kill_9_during_ingestion_then_reingest(tmp_path):
    docs = corpus(tmp_path / "docs")
    model = tiny_st_model(tmp_path / "tiny")
    db = tmp_path / "killed.db"
    cmd = dlforge_cmd("rag", "index", str(docs), "--db", str(db), "--model", str(model), "--chunk-tokens", "32",
                      "--chunk-overlap", "4")
    first = kill_when(cmd, db, 1)
    assert 0 < first < FILES
    rows, _ = snapshot(db)  # opens after the kill: a consistent partial index
    assert len({r[0] for r in rows}) == first
    second = kill_when(cmd, db, first + 1)  # killed again, part-way through the second pass
    assert first < second < FILES
    snapshot(db)

    report = index_folder(docs, db, model=str(model), threads=1)  # tiny matrices: one thread, as the subprocesses
    assert report.unchanged == second and report.added == FILES - second and report.chunks_removed == 0
    clean = tmp_path / "clean.db"
    index_folder(docs, clean, model=str(model), chunk_tokens=32, chunk_overlap=4, threads=1)
    rows, vectors = snapshot(db)
    clean_rows, clean_vectors = snapshot(clean)
    assert rows == clean_rows and len({r[0] for r in rows}) == FILES
    np.testing.assert_allclose(vectors, clean_vectors, atol=1e-5)
