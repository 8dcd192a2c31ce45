"""The vector index's tuning: the automatic exact path on small indexes, ef calibrated for a target recall and
recorded in the index's settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
from clitools import run_here
from ragtools import unit_vectors

from dlforge.errors import DataError
from dlforge.rag import vector_index
from dlforge.rag.sqlite_store import SQLiteStore, open_store
from dlforge.rag.store import ChunkRecord, DocumentRecord
from dlforge.rag.vector_index import VectorIndex

DIM = 16
SETTINGS = {"embedder": {"name": "toy", "source": "toy", "dim": DIM, "fingerprint": "f" * 64},
            "chunking": {"max_tokens": 64, "overlap": 8}}


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around 20 centres: neighbourhoods a graph can exploit, like real embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim))
    v = centres[rng.integers(0, 20, n)] + 0.6 * rng.standard_normal((n, dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def filled(tmp_path, v: np.ndarray) -> SQLiteStore:
    store = open_store(tmp_path / "x.db", create=SETTINGS, writer=True)
    doc = DocumentRecord("/corpus/a.md", "a.md", "md", "a", "sha", 0, 0.0, "")
    store.write([(doc, [ChunkRecord(f"c{i}", ("H",), 0, 1, 1) for i in range(len(v))], v)], [])
    return store


def test_a_small_index_is_searched_exactly_and_a_large_one_through_the_graph(tmp_path, monkeypatch):
    v = unit_vectors(400, DIM, seed=1)
    store = filled(tmp_path, v)
    first = store.db.execute("SELECT min(id) FROM chunks").fetchone()[0]
    for q in unit_vectors(20, DIM, seed=2):
        scores = v @ q
        brute = np.argsort(-scores, kind="stable")[:10]
        found = store.search_dense(q, 10)
        assert [i - first for i, _ in found] == brute.tolist()
        np.testing.assert_allclose([s for _, s in found], scores[brute], rtol=1e-5)
    assert store.ann._matrix is not None  # the matrix product answered, not the graph
    monkeypatch.setattr(vector_index, "EXACT_BELOW", 100)
    store.ann.add(np.array([10**6]), unit_vectors(1, DIM, seed=3))  # drops the cached matrix
    store.search_dense(v[0], 10)
    assert store.ann._matrix is None  # above the limit: the graph
    store.close()


def test_calibration_reaches_its_target_on_held_out_queries():
    data = clustered(3200, DIM)
    base, queries = data[:3000], data[3000:]  # the queries: never stored, from the same distribution
    index = VectorIndex(DIM, connectivity=4, expansion_add=16)  # a sparse graph: recall grows with ef
    index.add(np.arange(len(base)), base)
    low, r_low = index.calibrate(0.8, sample=300)
    high, r_high = index.calibrate(0.95, sample=300)
    assert r_low >= 0.8 and r_high >= 0.95 and high > low
    assert index.ef == vector_index.DEFAULTS["expansion_search"]  # left as it was
    truth = np.argsort(-(queries @ base.T), axis=1)[:, :10]
    index.ef = high
    found = index.search_batch(queries, 10)
    assert np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]) >= 0.95


def test_tuned_ef_is_recorded_and_survives_reopening(tmp_path):
    store = filled(tmp_path, clustered(800, DIM))
    tuned = store.tune_ann(0.97, sample=200)
    assert tuned["recall"] >= 0.97 and store.ann.ef == tuned["expansion_search"]
    assert store.settings()["ann"]["expansion_search"] == 64  # the build settings are not rewritten
    store.close()
    for path in sorted(tmp_path.glob("x.db.*.usearch")):
        path.unlink()  # rebuilt from SQLite on open: the tuned ef still applies
    with SQLiteStore(tmp_path / "x.db") as again:
        assert again.ann.ef == tuned["expansion_search"]
        assert again.stats()["vector_index"]["expansion_search"] == tuned["expansion_search"]
        assert again.stats()["vector_index"]["tuned"] == tuned
        with pytest.raises(DataError, match="reading only"):
            again.tune_ann(0.9)


def test_an_index_without_tuning_opens_with_its_build_ef(tmp_path):
    store = filled(tmp_path, clustered(50, DIM))
    assert "ann_tuned" not in store.settings() and store.ann.ef == 64
    with pytest.raises(DataError, match="target recall"):
        store.tune_ann(1.5)
    store.close()
    with SQLiteStore(tmp_path / "x.db") as again:
        assert again.ann.ef == 64 and again.stats()["vector_index"]["tuned"] is None


def test_rag_calibrate_records_the_ef_and_says_so(tmp_path, capsys):
    filled(tmp_path, clustered(600, DIM)).close()
    r = run_here(capsys, "rag", "calibrate", "--db", str(tmp_path / "x.db"), "--target-recall", "0.9", "--json")
    assert r.returncode == 0, r.stderr
    tuned = json.loads(r.stdout)
    assert tuned["target_recall"] == 0.9 and tuned["recall"] >= 0.9
    with SQLiteStore(tmp_path / "x.db") as again:
        assert again.settings()["ann_tuned"] == tuned and again.ann.ef == tuned["expansion_search"]
    r = run_here(capsys, "rag", "calibrate", "--db", str(tmp_path / "x.db"), "--target-recall", "2")
    assert r.returncode == 2 and "target recall 2.0: expected a number in (0, 1]" in r.stderr
