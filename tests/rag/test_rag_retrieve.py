"""Retrieval (dense, keyword, hybrid fusion, filters) and its evaluation, including the Debian FAQ development set."""

from __future__ import annotations

import json

import pytest
from ragtools import PETS, minilm, write_files

from dlforge.errors import ConfigError, DataError
from dlforge.rag.evaluate import Gold, evaluate, read_questions, score_ranking
from dlforge.rag.faq import faq_questions, write_blanked_corpus
from dlforge.rag.fusion import linear_fusion
from dlforge.rag.ingest import index_folder
from dlforge.rag.retrieve import Retriever, reciprocal_rank_fusion
from dlforge.rag.sqlite_store import open_store
from dlforge.rag.store import Filters

HANDY = {
    "codes.md": "# Error codes\n\nError E4711 is printed by the backup tool.\n",
    "storage.md": "# Storage\n\nWhen the disk is full, saving files fails and the system warns about capacity.\n",
    "cats.md": "# Cats\n\nCats sleep for about sixteen hours a day.\n",
}


@pytest.fixture(scope="module")
def handy(tmp_path_factory):
    root = tmp_path_factory.mktemp("handy")
    index_folder(write_files(root / "docs", {**HANDY, **PETS}), root / "i.db", embedder=minilm())
    with Retriever(open_store(root / "i.db"), minilm()) as r:
        yield r


def test_reciprocal_rank_fusion_by_hand():
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 1, 4]], rrf_k=60)
    assert [i for i, _ in fused] == [1, 3, 2, 4]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62) and fused[1][1] == pytest.approx(1 / 63 + 1 / 61)
    assert fused[2][1] == pytest.approx(1 / 62) and fused[3][1] == pytest.approx(1 / 63)
    assert [i for i, _ in reciprocal_rank_fusion([[5, 6], [6, 5]])] == [5, 6]  # a tie keeps the first-seen order


def test_hybrid_fuses_the_keyword_and_dense_rankings(handy):
    question = "What does E4711 mean?"
    keyword = handy.search(question, k=20, mode="keyword")
    dense = handy.search(question, k=20, mode="dense")
    hybrid = handy.search(question, k=3, mode="hybrid")
    assert keyword[0]["relpath"] == "codes.md" and len(keyword) == 1  # the only chunk with the rare code
    lists = [[(h["chunk_id"], h["score"]) for h in dense], [(h["chunk_id"], h["score"]) for h in keyword]]
    expected = linear_fusion(lists, [1.0, 0.3])[:3]  # the default fusion: the index records no other
    assert [(h["chunk_id"], pytest.approx(h["score"])) for h in hybrid] == [(i, s) for i, s in expected]
    assert hybrid[0]["relpath"] == "codes.md" and hybrid[0]["score"] > 0.3  # the only keyword hit: 0.3 + its dense
    assert all(-1 <= h["similarity"] <= 1 for h in hybrid)
    paraphrase = handy.search("my drive has no free space left", k=1, mode="dense")
    assert paraphrase[0]["relpath"] == "storage.md"  # no shared words, found by meaning
    assert handy.search("my drive has no free space left", k=1, mode="keyword") == []


def test_records_and_filters(handy):
    (hit,) = handy.search("How long do cats sleep?", k=1)
    assert set(hit) >= {"text", "score", "doc_id", "source", "heading", "start", "end"}
    assert hit["source"].endswith("/cats.md") and hit["heading"] == ["Cats"]
    with open_store(handy.store.path) as s:
        text = s.db.execute("SELECT text FROM documents WHERE id=?", (hit["doc_id"],)).fetchone()[0]
    assert text[hit["start"]:hit["end"]] == hit["text"]
    only = handy.search("How long do cats sleep?", k=5, filters=Filters(types=("txt",)))
    assert {h["relpath"] for h in only} == {"dogs.txt"}
    fish = handy.search("sleep", k=5, mode="keyword", filters=Filters(path="fish/*"))
    assert fish == []  # "sleep" is in other documents only
    assert {h["relpath"] for h in handy.search("water", k=5, filters=Filters(path="fish/*"))} == {"fish/goldfish.rst"}
    keyword = handy.search("goldfish pond", k=2, mode="keyword")
    assert "similarity" not in keyword[0]
    handy.similarity("goldfish pond", keyword)
    assert keyword[0]["similarity"] > 0.3
    with pytest.raises(ConfigError, match="--mode 'fuzzy'"):
        handy.search("x", mode="fuzzy")


def test_score_ranking_by_hand():
    hits = [{"source": "/d/a.md", "relpath": "a.md", "heading": ["A"], "start": 0, "end": 10},
            {"source": "/d/b.md", "relpath": "b.md", "heading": ["B", "B.1"], "start": 50, "end": 90},
            {"source": "/d/b.md", "relpath": "b.md", "heading": ["B", "B.2"], "start": 90, "end": 120}]
    one = score_ranking(hits, [Gold("b.md", heading="B.1")])
    assert one == {"recall@1": 0.0, "recall@5": 1.0, "recall@10": 1.0, "rr": 0.5, "ndcg@10": pytest.approx(1 / 1.585,
                                                                                                          abs=1e-3)}
    both = score_ranking(hits, [Gold("a.md"), Gold("/d/b.md", start=100, end=200)])
    assert both["recall@1"] == 0.5 and both["rr"] == 1.0
    assert both["ndcg@10"] == pytest.approx((1 + 1 / 2) / (1 + 1 / 1.585), abs=1e-3)  # ranks 1 and 3
    section = score_ranking(hits, [Gold("b.md", heading="B")])  # two chunks of one gold section count once
    assert section["ndcg@10"] == pytest.approx(1 / 1.585, abs=1e-3)
    assert score_ranking(hits, [Gold("c.md")]) == {"recall@1": 0, "recall@5": 0, "recall@10": 0, "rr": 0,
                                                   "ndcg@10": 0}


def test_evaluate_reports_every_mode(handy, tmp_path):
    questions = tmp_path / "q.jsonl"
    rows = [{"question": "How long do cats sleep?", "gold": ["cats.md"]},
            {"question": "What does error E4711 mean?", "gold": [{"source": "codes.md", "heading": "Error codes"}]},
            {"question": "How often to change the tank water?", "gold": [{"source": "fish/goldfish.rst",
                                                                          "heading": "Water"}]}]
    questions.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    report = evaluate(questions, handy.store.path, modes=("dense", "keyword", "hybrid"), details=True)
    assert report["questions"] == 3 and set(report["modes"]) == {"dense", "keyword", "hybrid"}
    hybrid = report["modes"]["hybrid"]
    assert hybrid["recall@1"] == hybrid["mrr"] == 1.0 and hybrid["latency_ms_p95"] >= hybrid["latency_ms_p50"] > 0
    assert report["per_question"][0]["hybrid"]["top"][0].startswith("cats.md")


@pytest.mark.parametrize("line, message", [
    ("{oops", r"q\.jsonl:2: invalid JSON"),
    ('{"question": "x"}', r"q\.jsonl:2: 'gold' must be a non-empty list"),
    ('{"question": "x", "gold": [{"source": "a", "start": 5}]}', r"q\.jsonl:2: gold 'start' and 'end'"),
    ('{"gold": ["a"]}', r"q\.jsonl:2: expected an object with a non-empty 'question'"),
])
def test_question_file_errors_name_the_line(tmp_path, line, message):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "ok", "gold": ["a.md"]}\n' + line + "\n")
    with pytest.raises(DataError, match=message):
        read_questions(path)


def test_debian_faq_development_set(tmp_path):
    questions = faq_questions()
    assert len(questions) >= 110  # about 120 numbered question headings in the FAQ of Debian 11
    assert all(q["gold"][0]["heading"].endswith("?") and q["gold"][0]["heading"].endswith(q["question"])
               for q in questions)
    first = questions[0]
    assert first["question"] == "What is this FAQ?" and first["gold"] == [{"source": "basic-defs.en.html",
                                                                           "heading": "1.1. What is this FAQ?"}]
    blanked = write_blanked_corpus(tmp_path / "blank", questions)
    page = (tmp_path / "blank" / "basic-defs.en.html").read_text()
    assert "What is this FAQ?" not in page and "What is Debian GNU/Linux?" not in page and "1.1." in page
    assert blanked[0]["gold"][0]["heading"] == "1.1."
