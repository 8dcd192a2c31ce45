"""The Python FAQ development set: the hand-written questions are well-formed, spread over the FAQ's pages and are
not copies of their gold headings; golds are checked against a page's headings (a small Sphinx-like page here, so
the test needs no python3.11-doc)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from dlforge.errors import DataError
from dlforge.rag.faq import checked_questions

QUESTIONS = Path(__file__).resolve().parents[2] / "scripts" / "datasets" / "python_faq_questions.jsonl"
PAGES = {"general.html", "programming.html", "design.html", "library.html", "extending.html", "windows.html",
         "gui.html", "installed.html"}


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9_]+", text.lower().replace("’", "'").removesuffix("¶"))


def copied(question: str, heading: str) -> str | None:
    """Why `question` reads as a copy of `heading` (None when it does not): the heading inside the question, a
    run of four heading words in it, or half of all their distinct words shared."""
    q, h = words(question), words(heading)
    if " ".join(h) in " ".join(q):
        return "contains the heading"
    runs = {tuple(h[i:i + 4]) for i in range(len(h) - 3)}
    shared = [r for r in (tuple(q[i:i + 4]) for i in range(len(q) - 3)) if r in runs]
    if shared:
        return f"shares the words {' '.join(shared[0])!r}"
    if len(set(q) & set(h)) / len(set(q) | set(h)) >= 0.5:
        return "shares half its words"
    return None


def rows() -> list[dict]:
    return [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_questions_are_well_formed_and_spread_over_every_page():
    items = rows()
    assert len(items) >= 100
    assert len({r["id"] for r in items}) == len(items)
    for r in items:
        assert isinstance(r["question"], str) and r["question"].strip(), r["id"]
        assert r["gold"] and all(g["source"] in PAGES and g["heading"].strip() for g in r["gold"]), r["id"]
    per_page = Counter(g["source"] for r in items for g in r["gold"])
    assert set(per_page) == PAGES and min(per_page.values()) >= 2
    # one question per section: two questions on one heading would weigh that section twice
    assert len({(g["source"], g["heading"]) for r in items for g in r["gold"]}) == len(items)


def test_no_question_copies_its_heading():
    bad = [f"{r['id']}: {why}" for r in rows() for g in r["gold"] if (why := copied(r["question"], g["heading"]))]
    assert not bad, bad


def test_the_copy_check_catches_copies_and_near_copies():
    heading = "Why are default values shared between objects?¶"
    assert copied("Why are default values shared between objects?", heading) == "contains the heading"
    assert copied("python: why are default values shared between all my objects", heading)
    assert copied("default values shared objects", heading) == "shares half its words"
    assert copied("my function's list default keeps the items from the previous call, why?", heading) is None


SPHINX = ('<html><body><div class="sphinxsidebar"><h3>Table of Contents</h3></div><section><h1>Programming FAQ'
          '<a class="headerlink" href="#a">¶</a></h1><section><h2>Core Language<a class="headerlink" href="#b">¶</a>'
          '</h2><section><h3>Why are default values shared between objects?<a class="headerlink" href="#c">¶</a>'
          '</h3><p>Default values are created once.</p></section></section></section></body></html>')


def write_page(folder: Path) -> list[Path]:
    page = folder / "programming.html"
    page.write_text(SPHINX, encoding="utf-8")
    return [page]


def write_questions(folder: Path, *gold: dict) -> Path:
    path = folder / "q.jsonl"
    lines = [json.dumps({"id": f"q{i}", "question": "my list default keeps old items", "gold": [g]})
             for i, g in enumerate(gold)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_golds_resolve_to_the_readers_heading_with_or_without_the_pilcrow(tmp_path):
    pages = write_page(tmp_path)
    path = write_questions(tmp_path, {"source": "programming.html", "heading": "Why are default values shared "
                                      "between objects?"},
                           {"source": "programming.html", "heading": "Core Language¶"})
    out = checked_questions(path, pages)
    assert [q["gold"][0]["heading"] for q in out] == ["Why are default values shared between objects?",
                                                      "Core Language"]  # as the reader spells them: no "¶"


@pytest.mark.parametrize("gold, message", [
    ({"source": "programming.html", "heading": "Why are defaults shared?"}, "q.jsonl:2: gold heading"),
    ({"source": "design.html", "heading": "Core Language"}, "q.jsonl:2: gold source 'design.html'"),
    ({"source": "programming.html"}, "q.jsonl:2: expected"),
])
def test_a_gold_not_in_the_pages_names_its_line(tmp_path, gold, message):
    pages = write_page(tmp_path)
    path = write_questions(tmp_path, {"source": "programming.html", "heading": "Core Language"}, gold)
    with pytest.raises(DataError, match=re.escape(message)):
        checked_questions(path, pages)
