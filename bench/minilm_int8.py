"""MiniLM sentence embeddings in int8: all-MiniLM-L6-v2 (the packaged RAG embedder, on dlforge's BERT: mean pooling,
L2-normalised) exported to ONNX and quantized by onnxruntime's dynamic int8 as `dlforge rag index --embedder int8`
builds it (`dlforge.rag.embed_int8.build_graphs`: one outlier MatMul kept fp32), against the same export in fp32.

Measures, on passages of the Debian FAQ (its paragraphs, the first `--passages`): the cosine between each passage's
int8 and fp32 embedding (mean and minimum; target mean >= 0.99), the file sizes (target >= 3.5x smaller), and the
time of a batch of 16 x 128 tokens in each (paired, interleaved rounds; target int8 >= 1.5x as fast).

    python bench/minilm_int8.py [--rounds 10] [--passages 256] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dlforge.deploy.onnx_export import ort_session, require_onnx
from dlforge.llm.embed import load_sentence_embedder
from dlforge.rag.embed import default_model_folder
from dlforge.rag.embed_int8 import build_graphs
from dlforge.rag.faq import faq_pages
from dlforge.rag.readers import read_document

BATCH, TOKENS = 16, 128


def passages(n: int) -> list[str]:
    out = []
    for page in faq_pages():
        text = read_document(page, page.read_bytes()).text
        out += [p.strip() for p in text.split("\n\n") if len(p.split()) >= 8]
    return out[:n]


def encode(embedder, texts: list[str], width: int | None = None) -> dict[str, torch.Tensor]:
    """Token ids and mask as the sentence embedder builds them ([CLS] text [SEP], padded), cut to `width`."""
    tok = embedder.tokenizer
    ids = [[tok.cls_id, *x[:embedder.max_length - 2], tok.sep_id] for x in tok.encode_batch(texts)]
    width = width or max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), tok.pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for j, row in enumerate(ids):
        row = row[:width]
        input_ids[j, :len(row)], mask[j, :len(row)] = torch.tensor(row), 1
    return {"input_ids": input_ids, "attention_mask": mask}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--passages", type=int, default=256)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    require_onnx()
    embedder = load_sentence_embedder(default_model_folder())
    texts = passages(args.passages)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        report = build_graphs(d, embedder)  # `rag index --embedder int8`'s graphs
        graphs = {"fp32": d / "fp32" / "model.onnx", "int8": d / "int8" / "model.onnx"}
        sessions = {k: ort_session(f) for k, f in graphs.items()}
        sizes = {k: f.stat().st_size for k, f in graphs.items()}
        vectors = {k: [] for k in sessions}
        for start in range(0, len(texts), BATCH):
            feeds = {k: v.numpy() for k, v in encode(embedder, texts[start:start + BATCH]).items()}
            for k, s in sessions.items():
                vectors[k].append(s.run(["embeddings"], feeds)[0])
        a, b = np.concatenate(vectors["fp32"]), np.concatenate(vectors["int8"])
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        batch = {k: v.numpy() for k, v in encode(embedder, texts[:BATCH], width=TOKENS).items()}
        times = {k: [] for k in sessions}
        for r in range(args.rounds):
            for k in (("fp32", "int8") if r % 2 == 0 else ("int8", "fp32")):
                sessions[k].run(None, batch)
                start = time.perf_counter()
                sessions[k].run(None, batch)
                times[k].append(time.perf_counter() - start)
    ratios = [f / i for f, i in zip(times["fp32"], times["int8"], strict=True)]
    out = {"passages": len(texts), "export_max_abs_diff": report["max_abs_diff"], "kept_fp32": report["kept_fp32"],
           "cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min()),
           "fp32_bytes": sizes["fp32"], "int8_bytes": sizes["int8"], "size_ratio": sizes["fp32"] / sizes["int8"],
           "batch": f"{BATCH} x {TOKENS} tokens", "fp32_ms": 1000 * statistics.median(times["fp32"]),
           "int8_ms": 1000 * statistics.median(times["int8"]), "speedup_median": statistics.median(ratios),
           "speedup_min": min(ratios), "speedup_max": max(ratios), "rounds": args.rounds}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")


if __name__ == "__main__":
    main()
