"""Linear and weighted reciprocal rank fusion, what an index records, and choosing it on a folder's own questions."""

from __future__ import annotations

import json

import pytest
from ragtools import cli, minilm, write_files

from dlforge.errors import ConfigError, DataError
from dlforge.rag.evaluate import tune_fusion
from dlforge.rag.fusion import KEYWORD_WEIGHT, Fusion, linear_fusion, weighted_rrf
from dlforge.rag.ingest import index_folder
from dlforge.rag.retrieve import Retriever
from dlforge.rag.sqlite_store import open_store

# A question whose words are in one document (keyword) while its meaning is another's (dense): the weight decides.
DOCS = {
    "backup.md": "# Backups\n\nThe backup tool copies your home folder to the external disk every night.\n",
    "disk.md": "# Disk space\n\nWhen the drive has no free space left, delete old files or add storage.\n",
    "cats.md": "# Cats\n\nCats sleep for about sixteen hours a day.\n",
    "night.md": "# Night mode\n\nEvery night the screen dims; the tool for it copies nothing.\n",
}


def test_weighted_rrf_by_hand():
    fused = weighted_rrf([[1, 2, 3], [3, 1, 4]], [1.0, 0.5], rrf_k=60)
    expected = {1: 1 / 61 + 0.5 / 62, 2: 1 / 62, 3: 1 / 63 + 0.5 / 61, 4: 0.5 / 63}
    assert [i for i, _ in fused] == [1, 3, 2, 4]
    assert dict(fused) == pytest.approx(expected)
    # a heavier second list reorders: 3 (first there) passes 1
    assert [i for i, _ in weighted_rrf([[1, 2, 3], [3, 1, 4]], [1.0, 3.0])][:2] == [3, 1]
    # weight 0 drops a list entirely, its ids included
    assert weighted_rrf([[1, 2], [9, 8]], [1.0, 0.0]) == [(1, 1 / 61), (2, 1 / 62)]
    assert weighted_rrf([[5, 6], [6, 5]]) == [(5, 1 / 61 + 1 / 62), (6, 1 / 62 + 1 / 61)]  # a tie: first seen
    with pytest.raises(ValueError, match="2 rankings, 1 weights"):
        weighted_rrf([[1], [2]], [1.0])


def test_linear_fusion_by_hand():
    dense, keyword = [(1, 1.0), (2, 0.75), (3, 0.5)], [(3, 12.0), (4, 4.0), (1, 2.0)]
    fused = linear_fusion([dense, keyword], [1.0, 0.5])  # dense scaled 1, .5, 0; keyword 1, .2, 0
    assert dict(fused) == pytest.approx({1: 1.0 + 0.0, 2: 0.5, 3: 0.0 + 0.5, 4: 0.5 * 0.2})
    assert [i for i, _ in fused] == [1, 2, 3, 4]  # 2 and 3 tie at 0.5: the first seen stays first
    # the scores, not only the ranks, count: a near tie in dense lets a sure keyword hit through, a clear gap does not
    assert linear_fusion([[(1, 0.80), (2, 0.79), (3, 0.1)], [(2, 9.0), (3, 1.0)]], [1.0, 0.3])[0][0] == 2
    assert linear_fusion([[(1, 0.80), (2, 0.20), (3, 0.1)], [(2, 9.0), (3, 1.0)]], [1.0, 0.3])[0][0] == 1
    assert linear_fusion([[(7, 0.4)], []]) == [(7, 1.0)]  # one score: scaled to 1; an empty list adds nothing
    assert linear_fusion([[(1, 0.5), (2, 0.4)], [(9, 3.0)]], [1.0, 0.0]) == [(1, 1.0), (2, 0.0)]  # weight 0: dropped
    with pytest.raises(ValueError, match="2 lists, 1 weights"):
        linear_fusion([[], []], [1.0])


def test_fusion_settings_are_checked():
    assert Fusion.of({}) == Fusion(method="linear", keyword_weight=KEYWORD_WEIGHT, dense_weight=1.0, rrf_k=60)
    dense, keyword = [(1, 0.9), (2, 0.5)], [(2, 3.0), (1, 1.0)]
    assert Fusion.of({"fusion": {"method": "rrf", "keyword_weight": 0.7, "rrf_k": 10}}).fuse(dense, keyword) == \
        weighted_rrf([[1, 2], [2, 1]], [1.0, 0.7], 10)
    assert Fusion.of({"fusion": {"keyword_weight": 0.7}}).method == "rrf"  # recorded before linear fusion existed
    assert Fusion(keyword_weight=0.7).fuse(dense, keyword) == linear_fusion([dense, keyword], [1.0, 0.7])
    with pytest.raises(ConfigError, match="fusion method 'max'"):
        Fusion(method="max")
    with pytest.raises(ConfigError, match="non-negative weights"):
        Fusion(keyword_weight=-0.1)
    with pytest.raises(ConfigError, match="rrf_k"):
        Fusion(rrf_k=0)


def same(got: list[tuple[int, float]], expected: list[tuple[int, float]]) -> bool:
    return [i for i, _ in got] == [i for i, _ in expected] and \
        [s for _, s in got] == pytest.approx([s for _, s in expected])


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("fusion")
    index_folder(write_files(root / "docs", DOCS), root / "i.db", embedder=minilm())
    questions = root / "q.jsonl"
    rows = [{"question": "my drive is full, what now?", "gold": ["disk.md"]},
            {"question": "how long do cats sleep", "gold": ["cats.md"]},
            {"question": "where does the nightly copy of my files go", "gold": ["backup.md"]}]
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "i.db", questions


def test_the_index_weights_drive_hybrid_search(index):
    db, _ = index
    question = "my drive is full, the tool copies nothing"
    with Retriever(open_store(db), minilm()) as r:
        dense = [(h["chunk_id"], h["score"]) for h in r.search(question, 20, "dense")]
        keyword = [(h["chunk_id"], h["score"]) for h in r.search(question, 20, "keyword")]
        assert r.fusion == Fusion()  # nothing recorded yet
        default = [(h["chunk_id"], h["score"]) for h in r.search(question, 4, "hybrid")]
    assert dense[0][0] != keyword[0][0]  # the two lists disagree on the best chunk
    assert same(default, linear_fusion([dense, keyword], [1.0, KEYWORD_WEIGHT])[:4])
    assert default[0][0] == dense[0][0]
    with open_store(db, writer=True) as store:
        store.update_settings("fusion", Fusion(method="rrf", keyword_weight=5.0).to_dict())
        with pytest.raises(ValueError, match="fixed"):
            store.update_settings("embedder", {})
    with Retriever(open_store(db), minilm()) as r:
        heavy = [(h["chunk_id"], h["score"]) for h in r.search(question, 4, "hybrid")]
    assert same(heavy, weighted_rrf([[i for i, _ in dense], [i for i, _ in keyword]], [1.0, 5.0])[:4])
    assert heavy[0][0] == keyword[0][0]  # the keyword list now leads
    with open_store(db) as store, pytest.raises(DataError, match="reading only"):
        store.update_settings("fusion", {})
    with open_store(db, writer=True) as store:
        store.update_settings("fusion", None)  # back to the defaults for the other tests


def test_tune_fusion_scores_the_grid_and_records_the_choice(index, capsys):
    db, questions = index
    report = tune_fusion(questions, db, grid=(0.0, 0.2, 1.0))
    assert [(row["method"], row["keyword_weight"]) for row in report["grid"]] == \
        [(m, w) for m in ("linear", "rrf") for w in (0.0, 0.2, 1.0)]
    best = max(report["grid"], key=lambda row: (row["recall@5"], row["mrr"]))
    assert (report["chosen"]["method"], report["chosen"]["keyword_weight"]) in \
        {(row["method"], row["keyword_weight"]) for row in report["grid"]
         if (row["recall@5"], row["mrr"]) == (best["recall@5"], best["mrr"])}
    assert report["chosen"]["tuned_on"]["count"] == 3 and not report["saved"]
    assert Fusion.of(open_store(db).settings()) == Fusion()  # not saved
    code, out, _ = cli(capsys, "rag", "eval", str(questions), "--db", str(db), "--tune-fusion", "--save", "--json")
    assert code == 0, out
    saved = json.loads(out)
    with open_store(db) as store:
        assert store.settings()["fusion"] == saved["chosen"] and saved["saved"]
    code, _, err = cli(capsys, "rag", "eval", str(questions), "--db", str(db), "--save")
    assert code == 2 and "--save: only with --tune-fusion" in err and "Traceback" not in err


def test_contextual_headings_are_indexed_but_not_shown(tmp_path):
    """A chunk deep in a section is embedded and keyword-indexed with its heading path, but shows only its text."""
    body = " ".join(f"Step {i}: tighten the bolt number {i} by a quarter turn and check it again." for i in range(20))
    docs = write_files(tmp_path / "docs", {"manual.md": f"# Volcano observatory\n\n## Seismograph upkeep\n\n{body}\n"})
    index_folder(docs, tmp_path / "i.db", embedder=minilm(), chunk_tokens=48, chunk_overlap=0)
    with Retriever(open_store(tmp_path / "i.db"), minilm()) as r:
        records = r.store.records(r.store.chunk_ids())
        later = records[-1]  # not the section's first chunk: its text has no heading line
        assert "Volcano" not in later["text"] and "Seismograph" not in later["text"]
        assert later["heading"] == ["Volcano observatory", "Seismograph upkeep"]
        expected = minilm().embed(["Volcano observatory > Seismograph upkeep\n\n" + later["text"]])[0]
        assert r.store.vectors([later["chunk_id"]])[0] == pytest.approx(expected, abs=1e-5)  # embedded with context
        assert minilm().embed([later["text"]])[0] @ expected < 0.99  # ... which changes the vector
        found = r.search("volcano seismograph", k=len(records), mode="keyword")
        assert later["chunk_id"] in {h["chunk_id"] for h in found}  # BM25 sees the headings too
        assert all("Volcano" not in h["text"] for h in found if h["chunk_id"] == later["chunk_id"])
