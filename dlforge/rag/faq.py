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
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

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
