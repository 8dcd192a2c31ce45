"""`dlforge rag index --embedder int8`: the embedder in onnxruntime dynamic int8, recorded in the index as a model of
its own, close to fp32 in its vectors, and rebuilt beside the index when its graph is gone."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from clitools import one_line_error, run_here
from ragtools import PETS, tiny_st_model, write_files

from dlforge.errors import ConfigError, DataError
from dlforge.rag.embed import int8_folder, load_embedder
from dlforge.rag.embed_int8 import with_precision
from dlforge.rag.ingest import index_folder
from dlforge.rag.retrieve import Retriever
from dlforge.rag.sqlite_store import open_store


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("int8")
    model = tiny_st_model(d / "tiny")
    corpus = write_files(d / "docs", PETS)
    db = d / "int8.db"
    report = index_folder(corpus, db, model=str(model), precision="int8")
    return d, model, corpus, db, report


def _vectors(db):
    with open_store(db) as s:
        ids = [row[0] for row in s.db.execute("SELECT id FROM chunks ORDER BY id")]
        return s.vectors(ids), s.settings()["embedder"]


def test_an_int8_index_is_its_own_model_with_vectors_close_to_fp32(built):
    d, model, corpus, db, report = built
    assert report.chunks_added > 0
    int8, identity = _vectors(db)
    fp32_identity = load_embedder(str(model)).identity()
    assert identity["precision"] == "int8" and identity["fingerprint"] != fp32_identity["fingerprint"]
    assert identity["dim"] == fp32_identity["dim"] and identity["source"] == fp32_identity["source"]
    graph = onnx.load(str(int8_folder(db) / "int8" / "model.onnx")).graph
    assert {n.op_type for n in graph.node} & {"MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLinear"}
    fp32_db = d / "fp32.db"
    index_folder(corpus, fp32_db, model=str(model))
    fp32, _ = _vectors(fp32_db)
    cosine = (int8 * fp32).sum(1)  # both L2-normalised
    assert cosine.min() > 0.98 and not np.allclose(int8, fp32, atol=1e-6)  # quantized, and close
    np.testing.assert_allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-5)


def test_queries_are_embedded_in_int8_and_the_graph_is_rebuilt_when_missing(built):
    d, model, corpus, db, _ = built
    with Retriever.open(db) as r:
        assert r.embedder.identity()["precision"] == "int8"
        first = r.embed_query("How long do cats sleep?")
        assert r.search("How long do cats sleep?", k=1)[0]["relpath"] == "cats.md"
    shutil.rmtree(int8_folder(db))
    with Retriever.open(db) as r:  # rebuilt the same way: the same model, the same vectors
        np.testing.assert_allclose(r.embed_query("How long do cats sleep?"), first, atol=1e-6)
    assert (int8_folder(db) / "int8" / "manifest.json").is_file()
    with pytest.raises(ConfigError, match="--embedder fp32: the index was built with int8 embeddings"):
        index_folder(corpus, db, model=str(model), precision="fp32")
    with pytest.raises(DataError, match="not comparable"):  # fp32 vectors against the int8 index
        Retriever(open_store(db), load_embedder(str(model)))


def test_int8_refusals_are_one_line(built, capsys, tmp_path):
    d, model, corpus, db, _ = built
    cls = tiny_st_model(tmp_path / "cls", pooling="cls")
    with pytest.raises(ConfigError, match="--embedder int8: the model cls runs on sentence-transformers"):
        with_precision(load_embedder(str(cls)), "int8", tmp_path / "x.int8-embedder")
    proc = run_here(capsys, "rag", "index", str(corpus), "--db", str(tmp_path / "new.db"), "--model", str(model),
                    "--embedder", "int4")
    assert proc.returncode == 2 and "--embedder int4: expected one of fp32, int8" in one_line_error(proc)
    proc = run_here(capsys, "rag", "index", str(corpus), "--db", str(db), "--json")  # again: nothing changed
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["unchanged"] == len(PETS)
