"""Ingestion: every file type end to end, incremental updates, refusals, and the embedding-model check."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from ragtools import PETS, minilm, pdf_bytes, sentence_transformer, tiny_st_model, write_files
from safetensors.torch import load_file

from dlforge.errors import ConfigError, DataError
from dlforge.llm.embed import load_sentence_embedder, pooling_modes
from dlforge.rag.embed import BertEmbedder, SentenceTransformerEmbedder, load_embedder
from dlforge.rag.ingest import index_folder
from dlforge.rag.retrieve import Retriever
from dlforge.rag.sqlite_store import open_store


def index(folder, db, **kw):
    return index_folder(folder, db, embedder=kw.pop("embedder", None) or minilm(), **kw)


def all_chunks(db):
    with open_store(db) as s:
        rows = s.db.execute("SELECT d.relpath, c.ord, c.text, c.heading FROM chunks c JOIN documents d "
                            "ON d.id = c.doc_id ORDER BY d.relpath, c.ord").fetchall()
        return rows, len(s.ann)


def test_every_file_type_is_indexed_with_headings_and_searchable(tmp_path):
    corpus = write_files(tmp_path / "docs", {**PETS, "report.pdf": pdf_bytes(["Turtles hibernate in winter mud."])})
    report = index(corpus, tmp_path / "i.db")
    assert report.added == report.read == report.files == 6 and report.skipped == {}
    rows, vectors = all_chunks(tmp_path / "i.db")
    assert vectors == len(rows) == report.chunks_added
    by_type = {r[0].rsplit(".", 1)[1]: r for r in rows}
    assert set(by_type) == {"md", "txt", "rst", "html", "jsonl", "pdf"}
    assert '"page 1"' in by_type["pdf"][3] and '"Parrots"' in by_type["html"][3]
    with Retriever(open_store(tmp_path / "i.db"), minilm()) as r:
        for question, source in [("How long do goldfish live?", "fish/goldfish.rst"),
                                 ("When are rabbits active?", "notes.jsonl"),
                                 ("What do turtles do in winter?", "report.pdf"),
                                 ("Can parrots talk?", "birds.html"), ("How often should I walk my dog?", "dogs.txt")]:
            assert r.search(question, k=1)[0]["relpath"] == source, question


def test_incremental_add_change_delete(tmp_path):
    corpus = write_files(tmp_path / "docs", {k: PETS[k] for k in ("cats.md", "dogs.txt", "notes.jsonl")})
    db = tmp_path / "i.db"
    first = index(corpus, db)
    assert (first.added, first.unchanged, first.removed) == (3, 0, 0)
    with open_store(db) as s:
        dog_ids = s.db.execute("SELECT c.id FROM chunks c JOIN documents d ON d.id=c.doc_id "
                               "WHERE d.relpath='dogs.txt'").fetchall()
    threads = torch.get_num_threads()
    again = index(corpus, db, threads=1)
    assert (again.read, again.unchanged, again.chunks_added, again.chunks_removed) == (0, 3, 0, 0)
    assert torch.get_num_threads() == threads  # put back
    with pytest.raises(ConfigError, match="--threads 0"):
        index(corpus, db, threads=0)

    (corpus / "cats.md").write_text("# Cats\n\nCats purr when they are content.\n")
    (corpus / "notes.jsonl").unlink()
    write_files(corpus, {"fish/goldfish.rst": PETS["fish/goldfish.rst"]})
    third = index(corpus, db)
    assert (third.added, third.updated, third.unchanged, third.removed) == (1, 1, 1, 1)
    rows, vectors = all_chunks(db)
    assert vectors == len(rows) and {r[0] for r in rows} == {"cats.md", "dogs.txt", "fish/goldfish.rst"}
    texts = " ".join(r[2] for r in rows)
    assert "purr" in texts and "sixteen hours" not in texts and "Rabbits" not in texts
    with open_store(db) as s:
        assert s.db.execute("SELECT c.id FROM chunks c JOIN documents d ON d.id=c.doc_id "
                            "WHERE d.relpath='dogs.txt'").fetchall() == dog_ids  # untouched
        assert s.search_keyword("sixteen", 5) == [] and s.search_keyword("purr", 5)


def test_refusals_are_counted_never_followed(tmp_path):
    outside = write_files(tmp_path / "outside", {"secret.md": "# Secret\n\nThe launch code is 0000.\n"})
    corpus = write_files(tmp_path / "docs", {
        "ok.md": "# Fine\n\nA normal document.\n",
        "big.txt": "x " * 3000,
        "blob.txt": b"\x00\x01\x02binary",
        "latin.txt": "Caf\u00e9 cr\u00e8me is served daily here at noon.".encode("latin-1"),
        "image.png": b"\x89PNG",
        ".hidden.md": "# Hidden\n",
        "empty.md": "   \n",
        "broken.jsonl": "{not json\n",
    })
    os.symlink(outside / "secret.md", corpus / "escape.md")
    os.symlink(outside, corpus / "escape_dir")
    os.symlink(corpus / "ok.md", corpus / "alias.md")
    os.mkfifo(corpus / "pipe.txt")  # reading it would block forever
    report = index(corpus, tmp_path / "i.db", max_file_bytes=5000)
    reasons = {reason: sorted(i["path"] for i in items) for reason, items in report.skipped.items()}
    assert reasons == {"symlink_escape": ["escape.md", "escape_dir"], "symlink": ["alias.md"],
                       "too_large": ["big.txt"], "binary": ["blob.txt"], "unsupported": ["image.png"],
                       "hidden": [".hidden.md"], "empty": ["empty.md"], "unreadable": ["broken.jsonl"],
                       "not_regular": ["pipe.txt"]}
    assert "broken.jsonl:1: invalid JSON" in report.skipped["unreadable"][0]["detail"]
    assert report.replaced == ["latin.txt"] and report.added == 2
    rows, _ = all_chunks(tmp_path / "i.db")
    assert {r[0] for r in rows} == {"ok.md", "latin.txt"} and "launch code" not in " ".join(r[2] for r in rows)
    assert report.to_dict()["skipped_counts"]["symlink_escape"] == 2


def test_a_file_that_becomes_refused_leaves_the_index(tmp_path):
    corpus = write_files(tmp_path / "docs", {"a.md": "# A\n\nSmall.\n", "b.md": "# B\n\nAlso small.\n"})
    index(corpus, tmp_path / "i.db")
    (corpus / "b.md").write_text("# B\n\n" + "grown " * 2000)
    report = index(corpus, tmp_path / "i.db", max_file_bytes=4000)
    assert report.removed == 1 and [i["path"] for i in report.skipped["too_large"]] == ["b.md"]
    assert {r[0] for r in all_chunks(tmp_path / "i.db")[0]} == {"a.md"}


def test_another_embedding_model_is_refused(tmp_path):
    corpus = write_files(tmp_path / "docs", {"cats.md": PETS["cats.md"]})
    db = tmp_path / "i.db"
    index(corpus, db)
    tiny = tiny_st_model(tmp_path / "tiny")
    with pytest.raises(DataError, match=r"built with the embedding model 'all-MiniLM-L6-v2' \(384-d.*not 'tiny' "
                                        r"\(32-d.*not comparable"):
        index_folder(corpus, db, model=str(tiny))
    with pytest.raises(DataError, match="not comparable"):
        Retriever.open(db, model=str(tiny))
    # the same architecture and size, but other weights: refused by the fingerprint, not the dimension
    copy = tmp_path / "minilm-changed"
    shutil.copytree(minilm().folder, copy)
    config = (copy / "config.json").read_text()
    (copy / "config.json").write_text(config.replace('"layer_norm_eps": 1e-12', '"layer_norm_eps": 1e-6'))
    with pytest.raises(DataError, match=r"\(384-d, fingerprint .*\), not 'minilm-changed' \(384-d"):
        Retriever.open(db, model=str(copy))
    same = tmp_path / "minilm-copy"
    shutil.copytree(minilm().folder, same)
    with Retriever.open(db, model=str(same)) as r:  # an identical copy elsewhere is the same model
        assert r.search("How long do cats sleep?", k=1)[0]["relpath"] == "cats.md"


def test_chunk_settings_are_fixed_per_index(tmp_path):
    corpus = write_files(tmp_path / "docs", {"cats.md": PETS["cats.md"]})
    index(corpus, tmp_path / "i.db", chunk_tokens=64, chunk_overlap=8)
    with pytest.raises(ConfigError, match="--chunk-tokens 100: the index was built with 64"):
        index(corpus, tmp_path / "i.db", chunk_tokens=100)
    with pytest.raises(ConfigError, match="--chunk-tokens 300: .* reads 256 tokens; use at most 206"):
        index(corpus, tmp_path / "other.db", chunk_tokens=300)
    with pytest.raises(DataError, match="no such folder"):
        index(tmp_path / "missing", tmp_path / "i.db")


def test_vectors_match_sentence_transformers_directly(tmp_path):
    corpus = write_files(tmp_path / "docs", {"dogs.txt": PETS["dogs.txt"]})
    index(corpus, tmp_path / "i.db")
    with open_store(tmp_path / "i.db") as s:
        (cid, text), = s.db.execute("SELECT id, text FROM chunks").fetchall()
        stored = s.vectors([cid])[0]
    st = sentence_transformer(minilm().folder)
    reference = st.encode(["dogs\n\n" + text], normalize_embeddings=True)[0]  # title context + text
    np.testing.assert_allclose(stored, reference, atol=1e-4)
    assert float(stored @ reference) >= 0.9999


def test_bert_models_run_on_dlforge_others_on_sentence_transformers(tmp_path):
    texts = ["How long do cats sleep?", "Dogs were domesticated from wolves. " * 12, "x"]
    assert isinstance(minilm(), BertEmbedder)  # the default: dlforge's own BERT
    for pooling, kind in (("mean", BertEmbedder), ("cls", SentenceTransformerEmbedder)):
        folder = tiny_st_model(tmp_path / pooling, pooling=pooling)
        embedder = load_embedder(str(folder))
        assert type(embedder) is kind
        got = embedder.embed(texts)
        want = sentence_transformer(folder).encode(texts, normalize_embeddings=True)
        np.testing.assert_allclose(got, want, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ConfigError, match="pools with cls; dlforge embeds by mean pooling"):
        load_sentence_embedder(tmp_path / "cls")
    old_format = tmp_path / "old" / "1_Pooling"  # sentence-transformers < 6 wrote one flag per mode
    old_format.mkdir(parents=True)
    (old_format / "config.json").write_text('{"word_embedding_dimension": 32, "pooling_mode_cls_token": false, '
                                            '"pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false}')
    assert pooling_modes(old_format.parent) == ["mean"]
    # one model, either backend: the same identity, so an index built by one opens with the other
    other = SentenceTransformerEmbedder(minilm().folder, minilm().source, name=minilm().name)
    assert other.identity() == minilm().identity()
    ids = [[t.ids for t in e.tokenizer.encode_batch(texts)] for e in (other, minilm())]
    assert ids[0] == ids[1]
    weights = tmp_path / "cls" / "model.safetensors"  # weights pickled with more than tensors: one clear line
    torch.save({**load_file(weights), "hook": print}, tmp_path / "cls" / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(ConfigError, match=r"cls: not a loadable sentence-transformers model \(a weights file holds "
                                          r"Python objects besides tensors \(print\)") as refused:
        SentenceTransformerEmbedder(tmp_path / "cls", str(tmp_path / "cls"))
    assert "weights_only" not in str(refused.value) and "\n" not in str(refused.value)
