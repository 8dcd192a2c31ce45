"""`dlforge rag index | ask | eval | stats` as a user runs them: summaries, --json, and errors with exit code 2."""

from __future__ import annotations

import json
import os

import pytest
from ragtools import PETS, minilm, write_files

from dlforge.cli.main import main


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run `dlforge ARGS` in this process (the embedding model stays loaded between commands)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out = capsys.readouterr()
    return exit_info.value.code or 0, out.out, out.err


@pytest.fixture
def corpus(tmp_path):
    minilm()  # loaded once per session, reused by the commands below
    return write_files(tmp_path / "docs", {**PETS, "bad.jsonl": "{broken\n"})


def test_index_ask_eval_stats(capsys, corpus, tmp_path):
    db = str(tmp_path / "pets.db")
    os.symlink("/etc/hostname", corpus / "escape.txt")
    code, out, _ = cli(capsys, "rag", "index", str(corpus), "--db", db)
    assert code == 0 and "files: 6 found, 5 read (5 new, 0 changed), 0 unchanged, 0 removed" in out
    assert "skipped, symlink_escape: 1\n  escape.txt: symlink to /etc/hostname" in out
    assert "skipped, unreadable: 1\n  bad.jsonl: " in out and "invalid JSON" in out

    code, out, _ = cli(capsys, "rag", "index", str(corpus), "--db", db, "--json")
    summary = json.loads(out)
    assert summary["unchanged"] == 5 and summary["chunks_added"] == 0 and summary["skipped_counts"]["unreadable"] == 1

    code, out, _ = cli(capsys, "rag", "ask", "How long can goldfish live?", "--db", db, "--k", "3", "--json")
    result = json.loads(out)
    assert code == 0 and result["found"] and "ten years" in result["answer"]
    assert result["citations"][0]["relpath"] == "fish/goldfish.rst" and len(result["chunks"]) == 3
    assert {"text", "score", "similarity", "source", "heading", "start", "end", "doc_id"} <= set(result["chunks"][0])

    code, out, _ = cli(capsys, "rag", "ask", "How long can goldfish live?", "--db", db, "--type", "md")
    assert code == 0 and "goldfish.rst" not in out and "retrieved (hybrid)" in out

    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": "Can parrots talk?", "gold": ["birds.html"]}) + "\n")
    code, out, _ = cli(capsys, "rag", "eval", str(questions), "--db", db, "--json")
    report = json.loads(out)
    assert set(report["modes"]) == {"dense", "keyword", "hybrid"} and report["modes"]["hybrid"]["recall@1"] == 1.0

    code, out, _ = cli(capsys, "rag", "stats", "--db", db, "--json")
    stats = json.loads(out)
    assert stats["documents"] == 5 and stats["types"] == {"html": 1, "jsonl": 1, "md": 1, "rst": 1, "txt": 1}
    assert stats["embedder"]["name"] == "all-MiniLM-L6-v2" and stats["vector_index"]["in_sync"]


def test_bad_input_exits_2_with_one_line(capsys, corpus, tmp_path):
    code, _, err = cli(capsys, "rag", "stats", "--db", str(tmp_path / "none.db"))
    assert code == 2 and err.strip().endswith("no such index; build one with `dlforge rag index FOLDER --db "
                                              f"{tmp_path / 'none.db'}`")
    db = str(tmp_path / "pets.db")
    cli(capsys, "rag", "index", str(corpus), "--db", db)
    code, _, err = cli(capsys, "rag", "ask", "x", "--db", db, "--generator", "gpt")
    assert code == 2 and err == "error: --generator gpt needs --lm (a run folder or name)\n"
    code, _, err = cli(capsys, "rag", "eval", str(corpus / "cats.md"), "--db", db)
    assert code == 2 and "cats.md:1: invalid JSON" in err and len(err.splitlines()) == 1

