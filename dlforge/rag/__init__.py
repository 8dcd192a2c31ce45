"""Retrieval-augmented generation over a folder of documents, offline.

    from dlforge.rag import index_folder, Retriever, answer, ask, make_generator, evaluate
    index_folder("docs/", "docs.db")                         # ingest -> chunk -> embed -> store
    with Retriever.open("docs.db") as r:                     # retrieve: dense, keyword (BM25), hybrid
        hits = r.search("How do I upgrade?", k=5)
        result = answer("How do I upgrade?", r, make_generator("extractive", r.embedder))
    ask("How do I upgrade?", "docs.db", generator="extractive")   # the same, opening the index itself
    evaluate("questions.jsonl", "docs.db", modes=("dense", "keyword", "hybrid"))
    tune_fusion("questions.jsonl", "docs.db", save=True)    # hybrid's weights, chosen on known answers
    tune_index("docs/", "docs.db")                           # the model adapted to the folder, a new index

The flow, one module each: readers (file types) -> ingest (walk, refusals, incremental) -> chunk -> embed ->
store (interface) / sqlite_store + vector_index (the embedded backend) -> retrieve (fusion) -> prompt + generate ->
evaluate; mine + tune adapt the embedding model to a folder; faq builds the development sets. Heavy dependencies
(sentence-transformers, usearch, pypdf) load lazily.
"""

from dlforge.rag.evaluate import evaluate, tune_fusion
from dlforge.rag.generate import answer, ask, make_generator
from dlforge.rag.ingest import index_folder
from dlforge.rag.retrieve import Retriever
from dlforge.rag.sqlite_store import open_store
from dlforge.rag.store import Filters
from dlforge.rag.tune import tune_index

__all__ = ["Filters", "Retriever", "answer", "ask", "evaluate", "index_folder", "make_generator", "open_store",
           "tune_fusion", "tune_index"]
