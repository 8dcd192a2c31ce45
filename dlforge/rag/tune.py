"""`dlforge rag tune`: adapt the embedding model to a folder without labels, then index the folder with it.

    report = tune_index("docs/", "docs.db")                # -> docs-tuned.db and its model docs-tuned.db.embedder/
    report = tune_index("docs/", "docs.db", questions="q.jsonl")   # also recall before and after

1. Mine training pairs from the index's own chunks (`mine`: inverse cloze, one BM25 or dense hard negative each).
2. Fine-tune a copy of the index's embedding model on them by contrastive learning: each query against every
   passage of the batch (its own positive, the other queries' positives and all the hard negatives), softmax
   cross-entropy with the similarities scaled by 20, as sentence-transformers' MultipleNegativesRankingLoss. Passages
   of the query's own section are masked out rather than counted as negatives. AdamW, linear warm-up over the first
   10% of the steps and linear decay; one epoch by default.
3. Save the tuned model as a dlforge model folder beside the new index (`<out>.embedder/`, with its tokenizer and a
   tune.json saying how it was made), and index the folder into `out` with it: same chunk sizes and vector type,
   the fusion weights carried over. The new index records the tuned model's fingerprint like any other, so it is
   never searched with the base model (nor the old index with the tuned one). The old index is left as it was.

The model must run on dlforge's own encoder (a BERT that pools by the mean, as the default MiniLM does).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlforge.errors import ConfigError
from dlforge.rag.embed import BertEmbedder, load_embedder, torch_threads
from dlforge.rag.mine import Pair, mine_pairs
from dlforge.rag.sqlite_store import glob_escape, open_store

SCALE = 20.0  # cosine similarities times this are the logits (sentence-transformers' default scale)
QUERY_TOKENS, PASSAGE_TOKENS = 64, 256
GROUP = 16  # texts embedded together in a training step, sorted by length (`_embed`)


@dataclass
class TuneReport:
    db: str
    out: str
    model: str
    pairs: int = 0
    steps: int = 0
    loss_first: float = 0.0  # mean loss over the first 10% of the steps, and the last 10%
    loss_last: float = 0.0
    mine_s: float = 0.0
    train_s: float = 0.0
    index_s: float = 0.0
    seconds: float = 0.0
    chunks: int = 0
    evaluation: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tuned_paths(db: Path, out: Path | None) -> tuple[Path, Path]:
    """The new index (default `<db stem>-tuned<suffix>` beside the old) and its model folder `<out>.embedder/`."""
    out = out or db.with_name(f"{db.stem}-tuned{db.suffix or '.db'}")
    return out, out.with_name(out.name + ".embedder")


def tune_index(folder: str | Path, db: str | Path, out: str | Path | None = None, epochs: int = 1,
               batch_size: int = 32, lr: float = 2e-5, per_chunk: int = 4, seed: int = 0, threads: int | None = None,
               questions: str | Path | None = None, overwrite: bool = False) -> TuneReport:
    """Mine, fine-tune, save and re-index (see the module docstring); the old index is not changed."""
    from dlforge.rag.ingest import index_folder

    if epochs < 1 or batch_size < 2 or not lr > 0:
        raise ConfigError(f"rag tune: expected --epochs >= 1, --batch-size >= 2 and --lr > 0; got {epochs}, "
                          f"{batch_size}, {lr}")
    db = Path(db).expanduser().resolve()
    out_db, model_dir = tuned_paths(db, Path(out).expanduser().resolve() if out else None)
    if out_db == db:
        raise ConfigError(f"--out {out_db}: the tuned index must go to another file than --db")
    if out_db.exists() or model_dir.exists():
        if not overwrite:
            raise ConfigError(f"--out {out_db}: exists (or its model folder does); pass --overwrite to replace "
                              "them, or another --out")
        remove_index(out_db)
    t_all = time.perf_counter()
    with open_store(db) as store:
        settings = store.settings()
        embedder = load_embedder(settings["embedder"]["source"])
        if (settings["embedder"].get("precision") or "fp32") != "fp32" or not isinstance(embedder, BertEmbedder):
            raise ConfigError(f"{db}: built with {settings['embedder']['name']} "
                              f"({settings['embedder'].get('precision') or 'fp32'}); rag tune fine-tunes a float32 "
                              "BERT that pools by the mean, on dlforge's encoder (as the default MiniLM)")
        store.check_embedder(embedder.identity())
        report = TuneReport(str(db), str(out_db), embedder.name)
        with torch_threads(threads):
            t0 = time.perf_counter()
            pairs = mine_pairs(store, embedder, per_chunk=per_chunk, seed=seed)
            report.mine_s = round(time.perf_counter() - t0, 1)
    if len(pairs) < batch_size:
        raise ConfigError(f"{db}: only {len(pairs)} training pairs could be mined (chunks need two sentences of "
                          f"5-60 words); rag tune needs at least --batch-size {batch_size}")
    report.pairs = len(pairs)
    model = _copy_model(embedder)
    with torch_threads(threads):
        t0 = time.perf_counter()
        losses = train(model, embedder.inner.tokenizer, pairs, epochs, batch_size, lr, seed)
        report.train_s = round(time.perf_counter() - t0, 1)
    tenth = max(1, len(losses) // 10)
    report.steps = len(losses)
    report.loss_first, report.loss_last = (round(float(np.mean(losses[:tenth])), 4),
                                           round(float(np.mean(losses[-tenth:])), 4))
    _save(model, embedder, model_dir, {"base": embedder.identity(), "from_index": str(db), "pairs": len(pairs),
                                       "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                                       "steps": len(losses), "loss_first": report.loss_first,
                                       "loss_last": report.loss_last})
    t0 = time.perf_counter()
    ingest = index_folder(folder, out_db, model=str(model_dir), chunk_tokens=settings["chunking"]["max_tokens"],
                          chunk_overlap=settings["chunking"]["overlap"], vector_dtype=settings["ann"]["dtype"],
                          threads=threads)
    report.index_s, report.chunks = round(time.perf_counter() - t0, 1), ingest.chunks_added
    with open_store(out_db, writer=True) as store:
        if settings.get("fusion"):
            store.update_settings("fusion", settings["fusion"])
        store.update_settings("tuned", {"from_index": str(db), "model": str(model_dir), "pairs": len(pairs),
                                        "steps": len(losses)})
    report.seconds = round(time.perf_counter() - t_all, 1)
    if questions is not None:
        from dlforge.rag.evaluate import evaluate

        modes = ("dense", "hybrid")
        report.evaluation = {"before": evaluate(questions, db, modes)["modes"],
                             "after": evaluate(questions, out_db, modes)["modes"]}
    return report


def remove_index(db: Path) -> None:
    """Delete an index built by `tune_index`: its database and side files, and its model folder."""
    import shutil

    for path in [db, *db.parent.glob(f"{glob_escape(db.name)}-*"), *db.parent.glob(f"{glob_escape(db.name)}.*")]:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _copy_model(embedder: BertEmbedder):
    import copy

    return copy.deepcopy(embedder.inner.model)


def train(model, tokenizer, pairs: list[Pair], epochs: int, batch_size: int, lr: float, seed: int) -> list[float]:
    """Contrastive fine-tuning in place (see the module docstring); the loss of each step."""
    import torch
    import torch.nn.functional as F

    generator = np.random.default_rng(seed)
    steps_per_epoch = len(pairs) // batch_size
    total = epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, total // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, 1.0 - s / total))
    model.train()
    losses = []
    for _ in range(epochs):
        order = generator.permutation(len(pairs))
        for step in range(steps_per_epoch):
            batch = [pairs[i] for i in order[step * batch_size:(step + 1) * batch_size]]
            negatives = [p for p in batch if p.negative is not None]
            q = _embed(model, tokenizer, [p.query for p in batch], QUERY_TOKENS)  # (B, C), unit rows
            d = _embed(model, tokenizer, [p.positive for p in batch] + [p.negative for p in negatives],
                       PASSAGE_TOKENS)  # (B + H, C)
            logits = SCALE * q @ d.T
            owners = torch.tensor([p.chunk for p in batch] + [p.negative_chunk for p in negatives])
            same = owners[None, :] == torch.tensor([p.chunk for p in batch])[:, None]  # a query's own chunk
            same[torch.arange(len(batch)), torch.arange(len(batch))] = False  # ... except its positive itself
            loss = F.cross_entropy(logits.masked_fill(same, float("-inf")), torch.arange(len(batch)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
    model.eval()
    return losses


def _embed(model, tokenizer, texts: list[str], max_tokens: int, group: int = GROUP):
    """Embeddings of `texts` (N, C) in their order, computed in groups of `group` texts of similar length, so that a
    short text is not padded to the longest of the whole batch (passages run from a sentence to 256 tokens: padding
    them all to the longest made a step about a third slower). The mask keeps padding out of the mean, so the
    grouping changes no embedding; the gradient flows through all groups into one loss."""
    import torch

    ids = [[tokenizer.cls_id, *x[:max_tokens - 2], tokenizer.sep_id] for x in tokenizer.encode_batch(texts)]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    parts = [model.embed(*_pad(tokenizer, [ids[i] for i in order[g:g + group]]))
             for g in range(0, len(order), group)]
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return torch.cat(parts)[inverse]


def _pad(tokenizer, ids: list[list[int]]):
    """(input_ids, attention_mask) for token id lists ([CLS] ... [SEP]), padded to the longest."""
    import torch

    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, x in enumerate(ids):
        input_ids[row, :len(x)] = torch.tensor(x)
        mask[row, :len(x)] = 1
    return input_ids, mask


def _save(model, embedder: BertEmbedder, folder: Path, about: dict[str, Any]) -> None:
    from dlforge.artifacts import save_model

    tokenizer = embedder.inner.tokenizer
    extra = {**tokenizer.files(), "preprocessing.json": {"max_length": embedder.max_tokens,
                                                         "tokenizer_hash": tokenizer.hash},
             "tune.json": about}
    save_model(model, folder, extra_files=extra)
