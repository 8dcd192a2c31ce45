"""`dlforge embed RUN --input IMAGES`: the codes an image encoder (an autoencoder's, a VAE's posterior means) gives
image files, prepared as the run's training images were.

    summary = embed_images("runs/fashion-ae-...", "photos/", "codes.npy")   # one row per image, sorted by path
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlforge.errors import DlforgeError


def embed_images(run: str | Path, input_path: str | Path, out: str | Path, batch_size: int = 256) -> dict[str, Any]:
    """Encode an image file, or every image file under a folder, with the run's encoder and write the codes to
    `out`: .npy (float32, one row per image, in path order) or .jsonl ({"file", "embedding"} per image), atomically.
    Returns {"model", "images", "dim", "out", "seconds"}."""
    from dlforge.artifacts import load_trained
    from dlforge.data.images import input_images, prepare_images
    from dlforge.paths import output_file
    from dlforge.runs.rundir import atomic_write_bytes, atomic_write_text

    out = output_file(out, "the file to write the embeddings to (--out)", suffixes=(".npy", ".jsonl"))
    model = load_trained(run)
    pre = model.meta["extra"].get("preprocessing.json") or {}
    if pre.get("kind") != "image" or not hasattr(model, "encode"):
        raise DlforgeError(f"{run}: a {model.registry_name} model has no image encoder to embed with; autoencoder "
                           "and VAE runs have one (text: dlforge embed minilm or a BERT run, with a .txt input)")
    paths = input_images(Path(input_path))
    start = time.perf_counter()
    x = prepare_images(pre, paths)  # (N, C, H, W), as the training images
    with torch.no_grad():
        codes = torch.cat([model.encode(chunk) for chunk in x.split(batch_size)]).float().numpy()
    if out.suffix == ".npy":
        buf = io.BytesIO()
        np.save(buf, codes)
        atomic_write_bytes(out, buf.getvalue())
    else:
        rows = (json.dumps({"file": str(p), "embedding": [round(float(v), 7) for v in row]})
                for p, row in zip(paths, codes, strict=True))
        atomic_write_text(out, "\n".join(rows) + "\n")
    return {"model": str(run), "images": len(paths), "dim": int(codes.shape[1]), "out": str(out),
            "seconds": round(time.perf_counter() - start, 3)}
