"""Language models measured on corpora: perplexity per token and bits per character, on any split of any corpus.

    report = perplexity_report(["latest:gpt-shakespeare-bpe", "latest:gpt-bible-adapt"],
                               ["shakespeare", "bible_web"], split="val")
    report["results"][0]    # {"run", "corpus", "split", "tokens", "windows", "context", "loss", "perplexity",
                            #  "bits_per_token", "bits_per_char", "accuracy"}

Each model reads the split with its own tokenizer (the one saved with it, hash-checked): the documents' token stream
(each followed by the end-of-text token, as `lm_text` builds it) cut into side-by-side windows of `context` tokens
(default: the context the model was trained with), every token scored once given the tokens before it in its window.
These are the windows of `lm_text`'s validation and test splits, so a run's own corpus gives the perplexity in its
eval.json; and models that share a tokenizer and context are measured on exactly the same windows. Perplexity is per
token, so it compares models with the same tokenizer; bits per character (bits per token over the split's
characters per token) compares any two.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dlforge.data.corpus import Corpus, load_corpus
from dlforge.data.tokens import TokenWindows, tokenize_documents
from dlforge.errors import DataError
from dlforge.eval.evaluate import evaluate_model
from dlforge.eval.metrics import TaskMetrics


def corpus_perplexity(model: torch.nn.Module, tokenizer: Any, corpus: str | Corpus, split: str = "val",
                      context: int | None = None, batch_size: int = 64, device: str = "cpu") -> dict[str, Any]:
    """A language model's loss, perplexity, bits per token and per character and next-token accuracy on one split
    of a corpus (a name, a path or a loaded `Corpus`), over side-by-side windows of `context` tokens."""
    corpus = corpus if isinstance(corpus, Corpus) else load_corpus(corpus)
    docs = corpus.documents(split)
    if not docs:
        raise DataError(f"{corpus.name}: the {split} split has no documents")
    window = context or model_context(model)
    stream, counts = tokenize_documents(tokenizer, docs)
    data = TokenWindows(stream, window, window)
    if len(data) == 0:
        raise DataError(f"{corpus.name}: the {split} split has {counts['tokens']} tokens, fewer than one window of "
                        f"{window + 1}")
    metrics = TaskMetrics("language_modeling", chars_per_token=counts["chars_per_token"])
    scores = evaluate_model(model, data, metrics, batch_size=batch_size, device=device)
    return {"corpus": corpus.name, "split": split, "tokens": counts["tokens"], "chars": counts["chars"],
            "windows": len(data), "context": window, **scores}


def model_context(model: torch.nn.Module) -> int:
    """The context a model was trained with (its data's, from preprocessing.json), else its window."""
    pre = (getattr(model, "meta", None) or {}).get("extra", {}).get("preprocessing.json") or {}
    if isinstance(pre.get("context"), int):
        return pre["context"]
    window = getattr(getattr(model, "config", None), "context", None)
    if window is None:
        raise DataError(f"{type(model).__name__}: no context window; give one (context=, --context)")
    return window


def perplexity_report(runs: list[str | Path], corpora: list[str], split: str = "val", context: int | None = None,
                      device: str = "cpu") -> dict[str, Any]:
    """`corpus_perplexity` of every run (or model folder) on every corpus: {"split", "results": [one per pair]}."""
    from dlforge.llm.generate import load_language_model

    if not runs or not corpora:
        raise DataError("perplexity: give at least one run and one corpus")
    loaded = {name: load_corpus(name) for name in dict.fromkeys(corpora)}  # each read once
    results = []
    for run in runs:
        model, tokenizer = load_language_model(run, device=device)
        for corpus in loaded.values():
            results.append({"run": str(run), **corpus_perplexity(model, tokenizer, corpus, split, context,
                                                                 device=device)})
    return {"split": split, "results": results}
