"""`dlforge rag index | ask | eval | stats` as a user runs them: summaries, --json, and errors with exit code 2."""

from __future__ import annotations

import json
import os
import re
import sqlite3

import pytest
from clitools import run_cli
from ragtools import PETS, cli, minilm, write_files


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
    assert stats["fusion"]["method"] == "linear" and stats["fusion"]["tuned_on"] is None  # nothing chosen yet
    code, out, _ = cli(capsys, "rag", "stats", "--db", db)
    assert code == 0 and "linear, keyword weight 0.3 (default)" in out


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



def test_refused_options_leave_nothing_on_disk_and_say_so_in_one_line(capsys, corpus, tmp_path):
    new = tmp_path / "new" / "pets.db"
    for option in (["--chunk-tokens", "-5"], ["--chunk-tokens", "5000"], ["--chunk-overlap", "-1"],
                   ["--chunk-tokens", "100", "--chunk-overlap", "50"], ["--vector-dtype", "f64"],
                   ["--max-file-mb", "-1"], ["--threads", "0"], ["--progress-every", "-1"],
                   ["--model", str(tmp_path / "nowhere")]):
        code, out, err = cli(capsys, "rag", "index", str(corpus), "--db", str(new), *option)
        assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), (option, err)
        assert option[-2] in err, err  # names the option
        assert not new.parent.exists(), option  # no index, no lock file, no folder
    db = tmp_path / "pets.db"
    assert cli(capsys, "rag", "index", str(corpus), "--db", str(db), "--chunk-tokens", "64")[0] == 0
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("pets.db")}
    for args, message in [(["rag", "ask", ""], "question: empty"), (["rag", "ask", "  \n"], "question: empty"),
                          (["rag", "ask", "Do cats sleep?", "--type", "docx"], "--type docx: expected one of "),
                          (["rag", "ask", "Do cats sleep?", "--mode", "fuzzy"], "--mode 'fuzzy'"),
                          (["rag", "ask", "Do cats sleep?", "--generator", "bard"], "--generator 'bard'"),
                          (["rag", "eval", str(corpus / "cats.md"), "--type", "doc"], "--type doc: expected one of "),
                          (["rag", "index", str(corpus), "--chunk-tokens", "100"], "--chunk-tokens 100: the index "
                                                                                   "was built with 64")]:
        code, _, err = cli(capsys, *args, "--db", str(db))
        assert code == 2 and len(err.splitlines()) == 1 and message in err, (args, err)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("pets.db")} == files

    other = tmp_path / "app.db"  # another application's SQLite file: refused, not switched to WAL, not written
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE notes (text TEXT)")
    con.commit()
    con.close()
    before = other.read_bytes()
    for args in (["rag", "stats"], ["rag", "ask", "Do cats sleep?"], ["rag", "index", str(corpus)]):
        code, _, err = cli(capsys, *args, "--db", str(other))
        assert code == 2 and "app.db: not a dlforge RAG index" in err and len(err.splitlines()) == 1, (args, err)
    assert other.read_bytes() == before and not list(tmp_path.glob("app.db?*"))


def test_index_outside_a_terminal_says_how_far_it_got(tmp_path):
    """Through a pipe (a log, CI): plain progress lines on stderr, every --progress-every seconds (here: at every
    step), with the files done of all, the rate and the time left; stdout unchanged."""
    docs = write_files(tmp_path / "docs", PETS)
    proc = run_cli("rag", "index", str(docs), "--db", str(tmp_path / "i.db"), "--progress-every", "0")
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"rag index: 5/5 files \(100%\), [\d.e+]+ files/s, ETA 0\.0 s\n", proc.stderr), proc.stderr
    assert proc.stdout.startswith(f"indexed {docs} into {tmp_path / 'i.db'}")
