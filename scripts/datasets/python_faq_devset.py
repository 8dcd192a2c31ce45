"""Build the Python FAQ retrieval development set, and optionally index the FAQ and evaluate it.

    python scripts/datasets/python_faq_devset.py OUT                # OUT/questions.jsonl
    python scripts/datasets/python_faq_devset.py OUT --eval --json  # also index the FAQ, run dense/keyword/hybrid

The second development set beside the Debian FAQ (scripts/datasets/debian_faq_devset.py). The corpus is the Python
FAQ as Debian ships it (apt package python3.11-doc: /usr/share/doc/python3.11/html/faq/*.html, eight pages and
their index). The questions are hand-written in scripts/datasets/python_faq_questions.jsonl: each is what a user
would type about one section ("my function's list default keeps the items from the previous call, why?"), not the
section's heading, and its gold is that section: {"source": "programming.html", "heading": "Why are default values
shared between objects?"} (the heading as dlforge.rag.readers spells it, without Sphinx's "¶"). Every gold is
checked against the pages; one that is not found is an error naming its line.

Writes OUT/questions.jsonl (the checked questions). With --eval: the FAQ folder is indexed into OUT/python-faq.db
(`dlforge rag index`) and evaluated with the modes dense, keyword and hybrid (`dlforge rag eval`); results in
OUT/results.json. Needs the apt package python3.11-doc (the Makefile's `data` target installs it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dlforge.cli.main import run_script
from dlforge.rag.evaluate import evaluate
from dlforge.rag.faq import PYTHON_FAQ_DIR, checked_questions, python_faq_pages
from dlforge.rag.ingest import index_folder
from dlforge.runs.rundir import atomic_write_json, atomic_write_text

QUESTIONS = Path(__file__).with_name("python_faq_questions.jsonl")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="output folder")
    ap.add_argument("--faq-dir", type=Path, default=PYTHON_FAQ_DIR, help=f"the FAQ's HTML pages ({PYTHON_FAQ_DIR})")
    ap.add_argument("--questions", type=Path, default=QUESTIONS, help="the hand-written questions (.jsonl)")
    ap.add_argument("--eval", action="store_true", help="index the FAQ and evaluate")
    ap.add_argument("--model", default=None, help="embedding model folder (default all-MiniLM-L6-v2)")
    ap.add_argument("--chunk-tokens", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()

    questions = checked_questions(args.questions, python_faq_pages(args.faq_dir))
    args.out.mkdir(parents=True, exist_ok=True)
    qfile = args.out / "questions.jsonl"
    atomic_write_text(qfile, "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions))
    pages = sorted({g["source"] for q in questions for g in q["gold"]})
    print(f"{len(questions)} questions over {len(pages)} pages -> {qfile}", file=sys.stderr)
    if not args.eval:
        return
    db = args.out / "python-faq.db"
    ingest = index_folder(args.faq_dir, db, model=args.model, chunk_tokens=args.chunk_tokens)
    report = evaluate(qfile, db, modes=("dense", "keyword", "hybrid"), model=args.model)
    index = {k: ingest.to_dict()[k] for k in ("files", "read", "unchanged", "chunks_added", "seconds", "chunks_per_s")}
    results = {"python-faq": {"index": index, **report}}
    atomic_write_json(args.out / "results.json", results)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    from debian_faq_devset import print_results  # beside this script

    print_results(results)


if __name__ == "__main__":
    run_script(main)  # a DlforgeError: one line and exit code 2, as in the CLI
