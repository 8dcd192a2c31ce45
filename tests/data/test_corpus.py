"""Corpora: the user's files (text, folders, JSONL), strict UTF-8, splits, and the built-in corpora."""

from __future__ import annotations

import json

import pytest

from dlforge.data.corpus import SPLITS, corpus_names, load_corpus, read_utf8, split_by_fraction
from dlforge.data.sword import HELD_OUT_BOOKS
from dlforge.errors import ConfigError, DataError


def test_a_folder_of_text_markdown_and_jsonl(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("second " * 10, encoding="utf-8")
    (tmp_path / "a.md").write_text("# first\n", encoding="utf-8")
    (tmp_path / "sub" / "c.jsonl").write_text(json.dumps({"body": "third ✓"}) + "\n\n" + json.dumps({"body": "x"}))
    (tmp_path / "skip.csv").write_text("not,text")
    corpus = load_corpus(tmp_path, text_field="body", val_fraction=0.0, test_fraction=0.0)
    assert corpus.documents("train") == ["# first\n", "second " * 10, "third ✓", "x"]
    jsonl = tmp_path / "sub" / "c.jsonl"
    assert corpus.names["train"] == [str(tmp_path / "a.md"), str(tmp_path / "b.txt"), f"{jsonl}:1", f"{jsonl}:3"]
    assert corpus.info["documents"] == {"train": 4, "val": 0, "test": 0} and corpus.text("train").count("\n\n") == 3


def test_split_by_fraction_cuts_at_character_boundaries():
    named = [("a", "a" * 50), ("b", "b" * 30), ("c", "c" * 20)]
    splits, names = split_by_fraction(named, 0.1, 0.25)
    assert splits == {"train": ["a" * 50, "b" * 15], "val": ["b" * 10], "test": ["b" * 5, "c" * 20]}
    assert names == {"train": ["a", "b"], "val": ["b"], "test": ["b", "c"]}
    assert "".join(d for s in SPLITS for d in splits[s]) == "".join(t for _, t in named)


def test_non_utf8_bytes_are_reported_with_file_line_and_offset(tmp_path):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes(b"line one\nline two\ncaf\xe9 au lait\n")
    with pytest.raises(DataError, match=rf"^{latin}:3: not UTF-8 text \(byte 0xe9 at byte offset 21\)"):
        load_corpus(tmp_path)
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfhello")
    assert read_utf8(bom) == "hello"


def test_bad_sources_are_named(tmp_path):
    with pytest.raises(DataError, match=r"shakespear: no such file or folder, and not a built-in corpus; did you mean "
                                        r"'shakespeare'\?"):
        load_corpus("shakespear")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": 3}\n')
    with pytest.raises(DataError, match=rf"^{bad}:2: expected a JSON object with a string field 'text'"):
        load_corpus(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no .txt, .md, .jsonl files in this folder"):
        load_corpus(tmp_path / "empty")
    (tmp_path / "blank.txt").write_text("")
    with pytest.raises(DataError, match=r"blank.txt: no text \(every document is empty\)"):
        load_corpus(tmp_path / "blank.txt")
    with pytest.raises(ConfigError, match=r"val_fraction: expected a number in \[0, 0.5\)"):
        load_corpus(tmp_path / "blank.txt", val_fraction=0.7)


def test_shakespeare_is_split_by_play():
    corpus = load_corpus("shakespeare")
    plays = corpus.info["plays"]
    assert (len(plays["train"]), len(plays["val"]), len(plays["test"])) == (31, 4, 3)
    assert corpus.names == plays and not set(plays["val"]) & set(plays["train"])
    assert "ROSALIND:" in corpus.documents("val")[0]  # as-you-like-it, the first validation play
    assert 4_000_000 < corpus.chars("train") < 4_300_000 and "**" not in corpus.text("test")
    assert set(corpus_names()) == {"shakespeare", "bible_web", "bible_kjv", "bible_rv1909"}


def test_bible_corpus_is_split_by_book():
    corpus = load_corpus("bible_rv1909")
    assert corpus.names["val"] == list(HELD_OUT_BOOKS["val"]) and corpus.names["test"] == list(HELD_OUT_BOOKS["test"])
    assert len(corpus.names["train"]) == 66 - 8
    ruth = corpus.documents("train")[corpus.names["train"].index("Ruth")]
    assert ruth.count("\n\n") == 3 and len(ruth.splitlines()) == 85 + 3  # 4 chapters, 85 verses, a line each
