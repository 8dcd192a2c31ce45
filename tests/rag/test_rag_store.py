"""The SQLite + FTS5 + usearch store: writes, searches, filters, and the vector index's crash recovery."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from ragtools import unit_vectors

from dlforge.errors import DataError
from dlforge.rag.sqlite_store import SQLiteStore, fts_query, open_store
from dlforge.rag.store import ChunkRecord, DocumentRecord, Filters

DIM = 8
SETTINGS = {"embedder": {"name": "toy", "source": "toy", "dim": DIM, "fingerprint": "f" * 64},
            "chunking": {"max_tokens": 64, "overlap": 8}}


def doc(path: str, kind: str = "md", text: str = "") -> DocumentRecord:
    return DocumentRecord(f"/corpus/{path}", path, kind, path, f"sha-{path}-{text}", len(text), 0.0, text)


def chunks(texts: list[str], heading: tuple[str, ...] = ("H",)) -> list[ChunkRecord]:
    return [ChunkRecord(t, heading, 0, len(t), len(t.split())) for t in texts]


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path / "x.db", create=SETTINGS, writer=True)
    yield s
    s.close()


def test_write_replace_delete_keep_sqlite_fts_and_vectors_in_step(store, tmp_path):
    v = unit_vectors(6, DIM)
    assert store.write([(doc("a.md"), chunks(["alpha one", "alpha two"]), v[:2]),
                        (doc("b.txt", "txt"), chunks(["beta"]), v[2:3])], []) == (3, 0)
    first_ids = [i for i, _ in store.search_dense(v[0], 3)]
    assert store.write([(doc("a.md", text="new"), chunks(["gamma"]), v[3:4])], []) == (1, 2)  # replaced, not added
    assert store.write([], ["/corpus/b.txt"]) == (0, 1)
    assert store.documents() == {"/corpus/a.md": "sha-a.md-new"}
    assert len(store.ann) == 1 and store.search_dense(v[3], 5)[0][1] == pytest.approx(1.0, abs=1e-5)
    assert [r["text"] for r in store.records([i for i, _ in store.search_keyword("gamma", 5)])] == ["gamma"]
    assert store.search_keyword("alpha", 5) == [] and store.records(first_ids) == []  # old chunks gone everywhere
    new_id = store.search_dense(v[3], 1)[0][0]
    assert new_id > max(first_ids)  # ids are never reused
    store.db.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('integrity-check')")  # raises if FTS drifted


def test_records_are_plain_and_ordered(store):
    v = unit_vectors(2, DIM)
    store.write([(doc("g/a.md"), [ChunkRecord("text one", ("Top", "Sub"), 5, 13, 2, {"k": 1}),
                                  ChunkRecord("text two", ("Top",), 20, 28, 2)], v)], [])
    ids = [i for i, _ in store.search_dense(v[1], 2)]
    recs = store.records(ids)
    assert [r["chunk_id"] for r in recs] == ids and recs[0]["text"] == "text two"
    assert recs[1] == {"chunk_id": ids[1], "text": "text one", "doc_id": recs[1]["doc_id"], "source": "/corpus/g/a.md",
                       "relpath": "g/a.md", "title": "g/a.md", "type": "md", "heading": ["Top", "Sub"],
                       "start": 5, "end": 13, "tokens": 2, "meta": {"k": 1}}
    np.testing.assert_array_equal(store.vectors(ids), v[::-1])


@pytest.mark.parametrize("question", ['NEAR(a b) AND "x', "col:value ^start * - OR", "'; DROP TABLE chunks; --",
                                      "?!", "the and of"])
def test_keyword_search_accepts_any_text(store, question):
    store.write([(doc("a.md"), chunks(["value start of the table near x"]), unit_vectors(1, DIM))], [])
    hits = store.search_keyword(question, 5)  # never an FTS5 syntax error
    assert isinstance(hits, list) and all(score > 0 for _, score in hits)
    assert store.records([i for i, _ in hits]) or question == "?!"


def test_fts_query_quotes_words_and_drops_stop_words():
    assert fts_query('How do I use "apt-get" NEAR(x)?') == '"use" OR "apt" OR "get" OR "near" OR "x"'
    assert fts_query("what is it") == '"what" OR "is" OR "it"'  # only stop words: keep them
    assert fts_query("?!") is None


def test_bm25_prefers_the_rarer_term(store):
    texts = ["apt apt apt common", "common words here", "common common", "upgrade with apt common"]
    store.write([(doc("a.md"), chunks(texts), unit_vectors(4, DIM))], [])
    ranked = [store.records([i])[0]["text"] for i, _ in store.search_keyword("apt upgrade", 4)]
    assert ranked[:2] == ["upgrade with apt common", "apt apt apt common"] and len(ranked) == 2


def test_filters_by_path_glob_and_type(store):
    v = unit_vectors(3, DIM)
    store.write([(doc("guides/install.md"), chunks(["install guide"]), v[:1]),
                 (doc("notes/install.txt", "txt"), chunks(["install notes"]), v[1:2]),
                 (doc("guides/deep/faq.html", "html"), chunks(["install faq"]), v[2:3])], [])

    def sources(hits):
        return sorted(r["relpath"] for r in store.records([i for i, _ in hits]))

    assert sources(store.search_dense(v[0], 5, Filters(path="guides/*"))) == ["guides/deep/faq.html",
                                                                              "guides/install.md"]
    assert sources(store.search_keyword("install", 5, Filters(types=("txt", "html")))) == ["guides/deep/faq.html",
                                                                                          "notes/install.txt"]
    assert sources(store.search_keyword("install", 5, Filters(path="*.md", types=("md",)))) == ["guides/install.md"]
    assert sources(store.search_dense(v[0], 5, Filters(path="/corpus/notes/*"))) == ["notes/install.txt"]


def test_hnsw_agrees_with_exact_search_on_a_small_index(store):
    v = unit_vectors(300, DIM, seed=1)
    store.write([(doc(f"d{i}.md"), chunks([f"c{i}"]), v[i:i + 1]) for i in range(300)], [])
    q = unit_vectors(1, DIM, seed=2)[0]
    exact = store.search_dense(q, 10, exact=True)
    brute = np.argsort(-(v @ q))[:10]
    assert [store.records([i])[0]["text"] for i, _ in exact] == [f"c{j}" for j in brute]
    approx = {i for i, _ in store.search_dense(q, 10)}
    assert len(approx & {i for i, _ in exact}) >= 9


def reopen(path):
    s = SQLiteStore(path)
    n = len(s.ann)
    rows = s.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
    return s, n, rows


def test_vector_index_file_is_saved_then_reused(tmp_path, store):
    v = unit_vectors(4, DIM)
    store.write([(doc("a.md"), chunks(["a", "b", "c", "d"]), v)], [])
    store.close()
    files = list(tmp_path.glob("x.db.*.usearch"))
    assert [f.name for f in files] == ["x.db.1.usearch"]
    s, n, rows = reopen(tmp_path / "x.db")
    assert n == rows == 4 and not s.rebuilt
    s.close()


@pytest.mark.parametrize("damage", ["missing", "truncated", "stale_generation", "wrong_count"])
def test_a_missing_damaged_or_stale_vector_index_is_rebuilt_from_sqlite(tmp_path, store, damage):
    v = unit_vectors(5, DIM)
    store.write([(doc("a.md"), chunks(["a", "b", "c"]), v[:3])], [])
    store.close()
    index_file = tmp_path / "x.db.1.usearch"
    if damage == "missing":
        index_file.unlink()
    elif damage == "truncated":  # a save cut short
        index_file.write_bytes(index_file.read_bytes()[:50])
    else:
        con = sqlite3.connect(tmp_path / "x.db")
        if damage == "stale_generation":  # rows committed after the last save, then killed before the next
            con.execute("INSERT INTO chunks (doc_id, ord, heading, text, start_char, end_char, tokens, vector) "
                        "SELECT doc_id, 9, heading, 'late', 0, 4, 1, ? FROM chunks LIMIT 1", (v[4].tobytes(),))
            con.execute("UPDATE meta SET value='2' WHERE key='generation'")
        else:  # the file claims to be current but holds fewer vectors than there are rows
            con.execute("INSERT INTO chunks (doc_id, ord, heading, text, start_char, end_char, tokens, vector) "
                        "SELECT doc_id, 9, heading, 'extra', 0, 5, 1, ? FROM chunks LIMIT 1", (v[4].tobytes(),))
        con.commit()
        con.close()
    s, n, rows = reopen(tmp_path / "x.db")
    assert s.rebuilt and n == rows == (3 if damage in ("missing", "truncated") else 4)
    if damage in ("stale_generation", "wrong_count"):
        assert s.search_dense(v[4], 1)[0][1] == pytest.approx(1.0, abs=1e-5)  # the late row is searchable
    s.close()
    s2, n2, _ = reopen(tmp_path / "x.db")  # the reader saved its repair: no rebuild the second time
    assert not s2.rebuilt and n2 == n
    s2.close()


def test_one_writer_at_a_time_and_readers_never_wait(tmp_path, store):
    with pytest.raises(DataError, match="another process is writing"):
        open_store(tmp_path / "x.db", writer=True)
    reader = open_store(tmp_path / "x.db")
    assert reader.stats()["chunks"] == 0
    reader.close()


def test_opening_errors_are_clear(tmp_path):
    with pytest.raises(DataError, match=r"nope\.db: no such index; build one with `dlforge rag index"):
        open_store(tmp_path / "nope.db")
    (tmp_path / "junk.db").write_text("not sqlite at all" * 100)
    with pytest.raises(DataError, match=r"junk\.db: not a dlforge RAG index"):
        open_store(tmp_path / "junk.db")
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(DataError, match=r"other\.db: not a dlforge RAG index"):
        open_store(tmp_path / "other.db")


def test_another_applications_database_is_refused_without_being_changed(tmp_path):
    other = tmp_path / "app.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    con.executemany("INSERT INTO notes (text) VALUES (?)", [("milk",), ("eggs",)])
    con.commit()
    con.close()
    before = other.read_bytes()
    for create, writer in ((None, False), (SETTINGS, True)):  # rag stats / ask / eval, and rag index
        with pytest.raises(DataError, match=r"app\.db: not a dlforge RAG index"):
            open_store(other, create=create, writer=writer)
    assert other.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]
    con = sqlite3.connect(other)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched to WAL
    con.close()


def test_vectors_of_the_wrong_shape_are_refused_and_nothing_is_written(store):
    with pytest.raises(DataError, match=r"a\.md: expected 2 finite vectors of 8 dimensions"):
        store.write([(doc("b.md"), chunks(["x"]), unit_vectors(1, DIM)),
                     (doc("a.md"), chunks(["x", "y"]), unit_vectors(2, DIM + 1))], [])
    assert store.documents() == {} and len(store.ann) == 0  # the whole transaction rolled back


def test_a_database_whose_creation_was_killed_is_created_again(tmp_path):
    con = sqlite3.connect(tmp_path / "new.db")  # the file exists, its schema transaction never committed
    con.execute("PRAGMA journal_mode=WAL")
    con.close()
    with pytest.raises(DataError, match="no such index"):
        open_store(tmp_path / "new.db")
    with open_store(tmp_path / "new.db", create=SETTINGS, writer=True) as s:
        assert s.settings()["embedder"]["dim"] == DIM and s.stats()["chunks"] == 0
