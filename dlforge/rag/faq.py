"""The Debian FAQ (apt package `debian-faq`) as a retrieval development set.

    questions = faq_questions()                  # [{"question": "What is this FAQ?", "gold": [{source, heading}]}]
    write_blanked_corpus(out_dir, questions)     # the harder variant (below)

The FAQ ships as HTML chapters in /usr/share/doc/debian/FAQ/*.en.html. Every numbered section heading that ends in
"?" (e.g. "1.1. What is this FAQ?") is a question; its section, sub-sections included, is the gold passage:
{"source": "basic-defs.en.html", "heading": "1.1. What is this FAQ?"}. The question asked is the heading without
its number. The corpus to index is the whole FAQ folder, not only the answers.

Asking the exact heading text is easy for keyword search, since the heading is in the indexed text. The blanked
variant removes that help: every occurrence of each question's text in the corpus (its heading, and the cross
references that quote it) is deleted, leaving only the section number, so a question must be matched to its
answer by the answer's content alone. Its gold headings are the bare numbers ("1.1.").

The second development set is the Python FAQ (apt package python3.11-doc): `python_faq_pages()` and
`checked_questions(path, pages)` for its hand-written questions (scripts/datasets/python_faq_devset.py).
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from dlforge.data.corpus import jsonl_objects
from dlforge.errors import DataError
from dlforge.rag.readers import read_document

FAQ_DIR = Path("/usr/share/doc/debian/FAQ")
QUESTION = re.compile(r"^(\d+(?:\.\d+)*\.)\s+(.+\?)$")


def faq_pages(faq_dir: str | Path = FAQ_DIR) -> list[Path]:
    faq_dir = Path(faq_dir)
    pages = sorted(p for p in faq_dir.glob("*.en.html") if not p.is_symlink())
    if not pages:
        raise DataError(f"{faq_dir}: no *.en.html pages; install the Debian FAQ: sudo apt-get install debian-faq")
    return pages


def faq_questions(faq_dir: str | Path = FAQ_DIR) -> list[dict[str, Any]]:
    """One entry per numbered question heading, in the FAQ's order."""
    out, seen = [], set()
    for page in faq_pages(faq_dir):
        doc = read_document(page, page.read_bytes())
        for section in doc.sections:
            for heading in section.heading:
                m = QUESTION.match(heading)
                if m and heading not in seen:
                    seen.add(heading)
                    out.append({"id": m.group(1).rstrip("."), "question": m.group(2),
                                "gold": [{"source": page.name, "heading": heading}]})
    return out


def write_blanked_corpus(out_dir: str | Path, questions: list[dict[str, Any]], faq_dir: str | Path = FAQ_DIR
                         ) -> list[dict[str, Any]]:
    """Copy the FAQ pages into `out_dir` with every question's text removed; return the questions with their gold
    headings reduced to the section numbers."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = sorted({q["question"] for q in questions}, key=len, reverse=True)  # longest first: no partial overlaps
    forms = {f for t in texts for f in (t, html.escape(t, quote=False), html.escape(t, quote=True))}
    pattern = re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)))
    for page in faq_pages(faq_dir):
        raw = page.read_text(encoding="utf-8")
        (out_dir / page.name).write_text(pattern.sub("", raw), encoding="utf-8")
    blanked = []
    for q in questions:
        gold = [{**g, "heading": g["heading"].split(" ", 1)[0]} for g in q["gold"]]
        blanked.append({**q, "gold": gold})
    return blanked


# The Python FAQ (apt package python3.11-doc) as a second development set: its questions are hand-written, in the
# words a user would type (scripts/datasets/python_faq_questions.jsonl), each with the answering section as gold.
PYTHON_FAQ_DIR = Path("/usr/share/doc/python3.11/html/faq")


def python_faq_pages(faq_dir: str | Path = PYTHON_FAQ_DIR) -> list[Path]:
    """The Python FAQ's HTML pages (general.html, programming.html, ...), sorted."""
    faq_dir = Path(faq_dir)
    pages = sorted(faq_dir.glob("*.html"))
    if not pages:
        raise DataError(f"{faq_dir}: no *.html pages; install the Python FAQ: sudo apt-get install python3.11-doc")
    return pages


def checked_questions(path: str | Path, pages: list[Path]) -> list[dict[str, Any]]:
    """The questions of the .jsonl file `path` ({"id", "question", "gold": [{"source", "heading"}]}) with each gold
    heading checked against the headings that `read_document` finds in the source page among `pages`. Headings are
    compared without Sphinx's trailing "¶" link and returned exactly as the reader spells them, so the questions stay
    valid whether or not the reader keeps that mark. DataError names the line of a gold that is not found."""
    path = Path(path)

    def key(heading: str) -> str:
        return " ".join(heading.removesuffix("¶").split())

    headings = {}
    for page in pages:
        doc = read_document(page, page.read_bytes())
        headings[page.name] = {key(h): h for section in doc.sections for h in section.heading}
    out, ids = [], set()
    expected = 'an object {"id", "question", "gold": [{"source", "heading"}, ...]}'
    for number, row in jsonl_objects(path, expected=expected):
        where = f"{path}:{number}"
        gold = row.get("gold")
        if (not isinstance(row.get("id"), str) or not isinstance(row.get("question"), str)
                or not row["question"].strip() or not isinstance(gold, list) or not gold):
            raise DataError(f"{where}: expected {expected}")
        if row["id"] in ids:
            raise DataError(f"{where}: id {row['id']!r} is used twice")
        ids.add(row["id"])
        resolved = []
        for g in gold:
            if not isinstance(g, dict) or not isinstance(g.get("source"), str) or not isinstance(g.get("heading"), str):
                raise DataError(f"{where}: expected {expected}")
            if g["source"] not in headings:
                raise DataError(f"{where}: gold source {g['source']!r} is not one of the FAQ's pages")
            exact = headings[g["source"]].get(key(g["heading"]))
            if exact is None:
                raise DataError(f"{where}: gold heading {g['heading']!r} is not a heading of {g['source']}")
            resolved.append({"source": g["source"], "heading": exact})
        out.append({"id": row["id"], "question": row["question"], "gold": resolved})
    if not out:
        raise DataError(f"{path}: no questions")
    return out
