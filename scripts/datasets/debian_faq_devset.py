"""Build the Debian FAQ retrieval development set, and optionally index the FAQ and evaluate it.

    python scripts/datasets/debian_faq_devset.py OUT                # OUT/questions.jsonl (+ the blanked variant)
    python scripts/datasets/debian_faq_devset.py OUT --eval --json  # also index the whole FAQ, run dense/keyword/hybrid

Writes OUT/questions.jsonl (the 120 numbered question headings of /usr/share/doc/debian/FAQ, each with its section
as gold) and the harder variant OUT/blanked/ (the FAQ pages with every question's text removed) with
OUT/questions-blanked.jsonl. With --eval: `dlforge rag index` of the FAQ folder into OUT/faq.db and of OUT/blanked
into OUT/blanked.db, then `dlforge rag eval --mode all` on each; results in OUT/results.json.
Needs the apt package debian-faq (the Makefile's `data` target installs it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dlforge.cli.main import run_script
from dlforge.rag.evaluate import evaluate
from dlforge.rag.faq import FAQ_DIR, faq_questions, write_blanked_corpus
from dlforge.rag.ingest import index_folder


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="output folder")
    ap.add_argument("--faq-dir", type=Path, default=FAQ_DIR)
    ap.add_argument("--eval", action="store_true", help="index the FAQ (and the blanked copy) and evaluate")
    ap.add_argument("--model", default=None, help="embedding model folder (default all-MiniLM-L6-v2)")
    ap.add_argument("--chunk-tokens", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    questions = faq_questions(args.faq_dir)
    write_jsonl(args.out / "questions.jsonl", questions)
    blanked = write_blanked_corpus(args.out / "blanked", questions, args.faq_dir)
    write_jsonl(args.out / "questions-blanked.jsonl", blanked)
    print(f"{len(questions)} questions -> {args.out / 'questions.jsonl'}; blanked variant -> "
          f"{args.out / 'questions-blanked.jsonl'} over {args.out / 'blanked'}", file=sys.stderr)
    if not args.eval:
        return
    results = {}
    for name, corpus, qfile in (("faq", args.faq_dir, "questions.jsonl"),
                                ("blanked", args.out / "blanked", "questions-blanked.jsonl")):
        db = args.out / f"{name}.db"
        ingest = index_folder(corpus, db, model=args.model, chunk_tokens=args.chunk_tokens)
        report = evaluate(args.out / qfile, db, modes=("dense", "keyword", "hybrid"), model=args.model)
        results[name] = {"index": {k: ingest.to_dict()[k] for k in ("files", "read", "unchanged", "chunks_added",
                                                                    "seconds", "chunks_per_s")},
                         **report}
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print_results(results)


def print_results(results: dict) -> None:
    """Each set's evaluation as a table of modes by metric (also python_faq_devset's)."""
    for name, r in results.items():
        print(f"\n{name}: {r['questions']} questions, {r['index']['chunks_added']} chunks indexed "
              f"at {r['index']['chunks_per_s']} chunks/s")
        cols = ["recall@1", "recall@5", "recall@10", "mrr", "ndcg@10", "latency_ms_p50", "latency_ms_p95"]
        print(f"{'mode':8s} " + " ".join(f"{c:>14s}" for c in cols))
        for mode, m in r["modes"].items():
            print(f"{mode:8s} " + " ".join(f"{m[c]:14.4f}" for c in cols))


if __name__ == "__main__":
    run_script(main)  # a DlforgeError: one line and exit code 2, as in the CLI
