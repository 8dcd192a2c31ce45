"""`dlforge rag index | ask | eval | tune | calibrate | stats`: question answering over a folder of documents."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from dlforge.cli.output import console, emit_json, table

app = typer.Typer(no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]}, add_completion=False)

LISTED = 5  # paths shown per skip reason (all of them with --json)


def _filters(path: str | None, types: list[str] | None):
    from dlforge.rag.store import Filters

    return Filters(path=path, types=tuple(types) if types else None)


@app.command("index")
def index_cmd(
    folder: Path = typer.Argument(..., help="folder of .txt .md .rst .html .pdf .jsonl files, read recursively"),
    db: Path = typer.Option(..., "--db", help="the index file (created if missing)"),
    model: str = typer.Option(None, "--model", help="sentence-transformers folder (default all-MiniLM-L6-v2)"),
    chunk_tokens: int = typer.Option(None, "--chunk-tokens", help="tokens per chunk at most (new index: 200)"),
    chunk_overlap: int = typer.Option(None, "--chunk-overlap", help="tokens shared by neighbouring chunks (32, or a "
                                                                     "quarter of smaller chunks)"),
    max_file_mb: float = typer.Option(20.0, "--max-file-mb", help="larger files are refused"),
    vector_dtype: str = typer.Option(None, "--vector-dtype",
                                     help="new index: f32 (default), or f16 / bf16 for half the vector-index memory"),
    threads: int = typer.Option(None, "--threads", help="torch threads for embedding (default: one per core)"),
    progress_every: float = typer.Option(30.0, "--progress-every",
                                         help="off a terminal (a log, CI): seconds between progress lines"),
    precision: str = typer.Option(None, "--embedder", help="new index: fp32 (default), or int8 (the model in "
                                                           "onnxruntime dynamic int8; needs the export extra)"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Index a folder, incrementally: new and changed files are read, deleted ones removed, the rest skipped."""
    from dlforge.paths import existing_dir, output_file

    existing_dir(folder, "a folder of documents to index")
    output_file(db, "the index file (--db)", parents=True)
    from dlforge.rag.ingest import index_folder

    r = index_folder(folder, db, model=model, chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap,
                     max_file_bytes=int(max_file_mb * 2**20), vector_dtype=vector_dtype, threads=threads,
                     progress_every=progress_every, precision=precision)
    if as_json:
        emit_json(r.to_dict())
        return
    print(f"indexed {r.root} into {r.db} in {r.seconds:.1f} s (+{r.model_seconds:.1f} s loading the model)")
    print(f"files: {r.files} found, {r.read} read ({r.added} new, {r.updated} changed), {r.unchanged} unchanged, "
          f"{r.removed} removed from the index")
    print(f"chunks: {r.chunks_added} added, {r.chunks_removed} removed ({r.chunks_per_s:.1f} chunks/s)")
    if r.vector_index_rebuilt:
        print("the vector index was rebuilt from the database (it was missing or out of date)")
    for reason, items in r.skipped.items():
        print(f"skipped, {reason}: {len(items)}")
        for item in items[:LISTED]:
            print(f"  {item['path']}: {item['detail']}")
        if len(items) > LISTED:
            print(f"  ... and {len(items) - LISTED} more (--json lists them all)")
    if r.replaced:
        print(f"not UTF-8, decoded with replacement characters: {', '.join(r.replaced)}")


@app.command("ask")
def ask_cmd(
    question: str = typer.Argument(..., help="the question"),
    db: Path = typer.Option(..., "--db", help="the index file"),
    generator: str = typer.Option("extractive", "--generator", help="extractive | gpt | transformers | openai"),
    k: int = typer.Option(5, "--k", min=1, help="chunks to retrieve"),
    mode: str = typer.Option("hybrid", "--mode", help="hybrid | dense | keyword"),
    path: str = typer.Option(None, "--path", help="only documents whose path matches this glob, e.g. 'guides/*'"),
    types: list[str] = typer.Option(None, "--type", help="only these file types (md, html, pdf...); repeatable"),
    min_similarity: float = typer.Option(None, "--min-similarity",
                                         help="below this best cosine the answer is 'not in the documents' (0.25)"),
    lm: str = typer.Option(None, "--lm", help="gpt: run folder or name; transformers: model folder; "
                                              "openai: the server's model name"),
    base_url: str = typer.Option(None, "--base-url", help="openai: e.g. http://127.0.0.1:8080/v1"),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env",
                                    help="openai: the environment variable holding the API key"),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1, help="language-model generators"),
    model: str = typer.Option(None, "--model", help="where to load the index's embedding model from"),
    exact: bool = typer.Option(False, "--exact", help="exact vector search instead of HNSW"),
    as_json: bool = typer.Option(False, "--json", help="print {answer, citations, chunks...} as JSON"),
) -> None:
    """Answer a question from the indexed documents, with citations and the retrieved chunks."""
    from dlforge.rag.generate import MIN_SIMILARITY, ask

    result = ask(question, db, generator, k=k, mode=mode, filters=_filters(path, types),
                 min_similarity=MIN_SIMILARITY if min_similarity is None else min_similarity, exact=exact,
                 model=model, lm=lm, base_url=base_url, api_key_env=api_key_env, max_new_tokens=max_new_tokens)
    if result["note"]:
        print(f"note: {result['note']}", file=sys.stderr)
    if as_json:
        emit_json(result)
        return
    console.print(result["answer"], markup=False, highlight=False)
    for c in result["citations"]:
        print(f"  [{c['n']}] {c['relpath']} ({' > '.join(c['heading'])}) chars {c['start']}-{c['end']}")
    rows = [[h["n"], h["score"], h["similarity"], h["relpath"], " > ".join(h["heading"][-1:])]
            for h in result["chunks"]]
    table(f"retrieved ({result['mode']})", ["n", "score", "similarity", "source", "heading"], rows)


@app.command("eval")
def eval_cmd(
    questions: Path = typer.Argument(..., help='JSONL, one question a line: {"question": "...", "gold": a list of '
                                               'file paths or {"source": ..., "heading": ...} objects}'),
    db: Path = typer.Option(..., "--db", help="the index file"),
    mode: str = typer.Option("all", "--mode", help="all | hybrid | dense | keyword"),
    k: int = typer.Option(10, "--k", min=1, help="chunks retrieved per question (at least 10 are)"),
    path: str = typer.Option(None, "--path", help="only documents whose path matches this glob"),
    types: list[str] = typer.Option(None, "--type", help="only these file types; repeatable"),
    model: str = typer.Option(None, "--model", help="where to load the index's embedding model from"),
    exact: bool = typer.Option(False, "--exact", help="exact vector search instead of HNSW"),
    details: bool = typer.Option(False, "--details", help="with --json: each question's scores and top hits"),
    tune_fusion: bool = typer.Option(False, "--tune-fusion", help="instead: score hybrid search's fusion (linear or "
                                     "RRF, keyword weight over a grid) on these questions and pick the best "
                                     "(recall@5, then MRR)"),
    save: bool = typer.Option(False, "--save", help="with --tune-fusion: record the chosen fusion in the index"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Retrieval quality: recall@1/5/10, MRR, nDCG@10 and query latency p50/p95 per retrieval mode."""
    from dlforge.paths import existing_file

    existing_file(questions, "a JSONL file of questions")
    if save and not tune_fusion:
        from dlforge.errors import ConfigError

        raise ConfigError("--save: only with --tune-fusion (it records the chosen fusion in the index)")
    if tune_fusion:
        from dlforge.rag.evaluate import tune_fusion as tune

        report = tune(questions, db, model=model, save=save)
        if as_json:
            emit_json(report)
            return
        table(f"hybrid fusion on {report['questions']} questions, {report['db']} (dense weight 1)",
              ["method", "keyword weight", "recall@1", "recall@5", "recall@10", "MRR"],
              [[r["method"], r["keyword_weight"], r["recall@1"], r["recall@5"], r["recall@10"], r["mrr"]]
               for r in report["grid"]])
        chosen, before = report["chosen"], report["before"]
        console.print(f"chosen: {chosen['method']}, keyword weight {chosen['keyword_weight']} (was {before['method']}, "
                      f"{before['keyword_weight']}); "
                      + ("recorded in the index" if save else "not recorded: add --save"))
        return
    from dlforge.rag.evaluate import evaluate, parse_modes

    report = evaluate(questions, db, modes=parse_modes(mode), k=k, model=model, filters=_filters(path, types),
                      exact=exact, details=details)
    if as_json:
        emit_json(report)
        return
    names = list(next(iter(report["modes"].values())))
    table(f"{report['questions']} questions, {report['db']}", ["metric", *report["modes"]],
          [[n, *[m[n] for m in report["modes"].values()]] for n in names])


@app.command("tune")
def tune_cmd(
    folder: Path = typer.Argument(..., help="the folder the index was built from"),
    db: Path = typer.Option(..., "--db", help="the index to start from (left unchanged)"),
    out: Path = typer.Option(None, "--out", help="the tuned index (default: <db stem>-tuned.db beside it)"),
    epochs: int = typer.Option(1, "--epochs", help="passes over the mined pairs"),
    batch_size: int = typer.Option(32, "--batch-size", help="queries per step (each against all passages of it)"),
    lr: float = typer.Option(2e-5, "--lr", help="AdamW learning rate"),
    per_chunk: int = typer.Option(4, "--per-chunk", help="query sentences mined per chunk at most"),
    seed: int = typer.Option(0, "--seed"),
    threads: int = typer.Option(None, "--threads", help="torch threads (default: one per core)"),
    questions: Path = typer.Option(None, "--questions", help="JSONL of questions with gold answers: recall of the "
                                                             "old and the new index, side by side"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an earlier tuned index at --out"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Adapt the embedding model to the folder without labels (sentences of each passage as its queries, hard
    negatives from BM25 and the model), save it beside a new index of the folder, and build that index."""
    from dlforge.paths import existing_dir, existing_file, output_file

    existing_dir(folder, "the folder the index was built from")
    existing_file(db, "the index file (--db)")
    if out is not None:
        output_file(out, "the tuned index (--out)", parents=True)
    if questions is not None:
        existing_file(questions, "a JSONL file of questions (--questions)")
    from dlforge.rag.tune import tune_index

    r = tune_index(folder, db, out, epochs=epochs, batch_size=batch_size, lr=lr, per_chunk=per_chunk, seed=seed,
                   threads=threads, questions=questions, overwrite=overwrite).to_dict()
    if as_json:
        emit_json(r)
        return
    print(f"tuned {r['model']} on {r['pairs']} pairs mined from {r['db']} in {r['seconds']:.0f} s (mining "
          f"{r['mine_s']:.0f} s, {r['steps']} steps {r['train_s']:.0f} s, indexing {r['chunks']} chunks "
          f"{r['index_s']:.0f} s); loss {r['loss_first']:.3f} -> {r['loss_last']:.3f}")
    print(f"new index: {r['out']}")
    if r["evaluation"]:
        before, after = r["evaluation"]["before"], r["evaluation"]["after"]
        table("retrieval on --questions", ["metric", *(f"{m} {w}" for m in before for w in ("before", "after"))],
              [[k, *(v for m in before for v in (before[m][k], after[m][k]))] for k in before["dense"]])


@app.command("calibrate")
def calibrate_cmd(
    db: Path = typer.Option(..., "--db", help="the index file"),
    target_recall: float = typer.Option(0.95, "--target-recall", help="recall@10 the vector search should reach"),
    sample: int = typer.Option(500, "--sample", help="questions made up from stored chunks to measure recall on"),
    as_json: bool = typer.Option(False, "--json", help="print the chosen setting as JSON"),
) -> None:
    """Choose the vector index's search breadth (ef) for a target recall@10 and record it in the index."""
    from dlforge.rag.sqlite_store import open_store

    with open_store(db, writer=True) as store:
        r = store.tune_ann(target_recall, sample=sample)
    if as_json:
        emit_json(r)
        return
    print(f"{db}: ef {r['expansion_search']} reaches recall@10 {r['recall']} (target {r['target_recall']}) on "
          f"{r['queries']} questions over {r['vectors']} vectors; recorded in the index")


@app.command("stats")
def stats_cmd(
    db: Path = typer.Option(..., "--db", help="the index file"),
    as_json: bool = typer.Option(False, "--json", help="print the statistics as JSON"),
) -> None:
    """What an index holds: documents by type, chunks, tokens, the embedding model, the vector index."""
    from dlforge.rag.sqlite_store import open_store

    with open_store(db) as store:
        s = store.stats()
    if as_json:
        emit_json(s)
        return
    e, v, f = s["embedder"], s["vector_index"], s["fusion"]
    rows = [["documents", s["documents"]], ["chunks", s["chunks"]], ["tokens", s["tokens"]],
            ["types", ", ".join(f"{t} {n}" for t, n in s["types"].items())],
            ["embedding model", f"{e['name']} ({e['dim']}-d, {e['source']})"],
            ["chunking", f"{s['chunking']['max_tokens']} tokens, overlap {s['chunking']['overlap']}"],
            ["vector index", f"{v['kind']}, {v['dtype']}, M={v['connectivity']}, ef={v['expansion_search']}, "
                             f"{'saved' if v['in_sync'] else 'to be rebuilt on next open'}"],
            ["hybrid fusion", f"{f['method']}, keyword weight {f['keyword_weight']} ("
                              + (f"chosen on {f['tuned_on']['count']} questions" if f["tuned_on"] else "default")
                              + ")"],
            ["bytes", f"sqlite {s['bytes']['sqlite']}, vectors {s['bytes']['vector_index']}"]]
    table(str(s["db"]), ["", "value"], rows)
