"""The RAG embedder in int8: `dlforge rag index --embedder int8`.

The BERT sentence embedder (all-MiniLM-L6-v2, or a dlforge BERT run) is exported to ONNX by `dlforge.deploy`
(checked against PyTorch within 1e-4), then quantized by onnxruntime's dynamic int8 as `dlforge quantize --mode
dynamic` does it: int8 per-channel weights for the MatMuls and the embedding tables, activations quantized on the
fly; but one MatMul stays fp32: of the three whose inputs have the widest outliers on some ordinary text (in MiniLM,
feed-forward output projections), the one whose keeping brings the embeddings closest to fp32's
(`dlforge.deploy.quantize.least_harmed`). It costs 8% of the file and a few seconds, and takes the blanked Debian
FAQ's dense recall@5 from 0.775 to 0.800 (fp32: 0.808). The tokenization, the batching by length and the mean pooling
are the fp32 embedder's (`SentenceEmbedder`); only the network runs in onnxruntime.

The graph is built once per index, into `<db>.int8-embedder/` beside the index, and rebuilt there when missing.
An int8 embedder is a different model: its fingerprint is the fp32 model's with the quantization recipe, so an
index built in one precision refuses queries embedded in the other (`Store.check_embedder`), and the index records
`precision: int8`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from dlforge.errors import ConfigError
from dlforge.rag.embed import BertEmbedder, RagEmbedder

PRECISIONS = ("fp32", "int8")
RECIPE = ("onnxruntime quantize_dynamic: QInt8 per-channel weights of MatMul/Gemm/Gather, dynamic uint8 activations; "
          "one MatMul kept fp32, the least harmed of the 3 with the widest input outliers")
CANDIDATES = 3  # MatMuls tried in fp32 (`least_harmed`): those whose inputs have the widest outliers
GRAPH = "model.onnx"  # the int8 graph, in the folder beside the export of the fp32 one


def with_precision(embedder: RagEmbedder, precision: str, folder: Path) -> RagEmbedder:
    """`embedder` itself for fp32; for int8 its model in onnxruntime dynamic int8, the graph in `folder`."""
    if precision == "fp32":
        return embedder
    if precision != "int8":
        raise ConfigError(f"--embedder {precision}: expected one of {', '.join(PRECISIONS)}")
    return Int8Embedder(embedder, folder)


class Int8Embedder(RagEmbedder):
    """A `BertEmbedder`'s model in onnxruntime dynamic int8 (see the module docstring)."""

    def __init__(self, base: RagEmbedder, folder: Path):
        if not isinstance(base, BertEmbedder):
            raise ConfigError(f"--embedder int8: the model {base.name} runs on sentence-transformers; int8 embedding "
                              "is built for BERT models with mean pooling (all-MiniLM-L6-v2, a dlforge BERT run)")
        self.base, self.inner = base, base.inner
        self.name, self.source, self.folder = f"{base.name} (int8)", base.source, base.folder
        self.dim, self.max_tokens, self.tokenizer = base.dim, base.max_tokens, base.tokenizer
        self.graph_folder = Path(folder)
        self.session = _session(self.graph_folder, self.inner)

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = hashlib.sha256(f"{self.base.fingerprint()}|int8|{RECIPE}".encode()).hexdigest()
        return self._fingerprint

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "precision": "int8"}

    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for rows, input_ids, mask in self.inner.padded_batches(texts, batch_size):
            out[rows] = self.session.run(["embeddings"], {"input_ids": input_ids.numpy(),
                                                          "attention_mask": mask.numpy()})[0]
        return out


def _embeddings(bert: Any) -> Any:
    """The graph's module: forward({"input_ids", "attention_mask"}) -> embeddings (B, C), mean-pooled and
    L2-normalised."""
    from types import SimpleNamespace

    import torch

    class Embeddings(torch.nn.Module):
        registry_name = "sentence embedder"

        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, batch: dict[str, torch.Tensor]) -> SimpleNamespace:
            return SimpleNamespace(embeddings=self.bert.embed(batch["input_ids"], batch["attention_mask"]))

    return Embeddings()


def _session(folder: Path, inner: Any) -> Any:
    """An onnxruntime session over the int8 graph in `folder`, exported and quantized there first if missing."""
    from dlforge.deploy.onnx_export import ort_session

    graph = folder / "int8" / GRAPH
    if not graph.is_file():
        build_graphs(folder, inner)
    return ort_session(graph)


def build_graphs(folder: Path, inner: Any) -> dict[str, Any]:
    """`inner`'s network (a `SentenceEmbedder`) exported to `folder`/fp32 and quantized to `folder`/int8 (written
    all at once each); returns the export's report with the MatMuls kept in fp32 (`kept_fp32`)."""
    from dlforge.artifacts import write_folder, write_json
    from dlforge.deploy.onnx_export import FORMAT, export_onnx, require_onnx
    from dlforge.deploy.quantize import least_harmed, quantize_dynamic_int8

    require_onnx()
    texts = ["an example sentence to trace the graph with", "and a second, longer one, so that the batch and "
             "the length are both traced as dynamic dimensions of the exported graph", "short", "three more",
             "to check the export at another batch size and length"]
    batches = [next(inner.padded_batches(texts[:2], 2))[1:], next(inner.padded_batches(texts[2:], 3))[1:]]
    examples = [{"input_ids": ids, "attention_mask": mask} for ids, mask in batches]
    signature = {"task": "embedding", "inputs": [{"name": n, "dtype": "int64", "shape": [-1, -1]}
                                                 for n in ("input_ids", "attention_mask")],
                 "outputs": [{"name": "embeddings", "dtype": "float32", "shape": [-1, inner.dim]}]}
    fp32 = folder / "fp32" / GRAPH
    report = export_onnx(_embeddings(inner.model), signature, examples, fp32.parent, source={"model": inner.name})
    feeds = [{"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
             for _, ids, mask in inner.padded_batches(CALIBRATION, len(CALIBRATION))]
    choice = least_harmed(fp32, feeds, CANDIDATES)

    def fill(tmp: Path) -> None:
        quantize_dynamic_int8(fp32, tmp / GRAPH, keep_fp32=[choice["keep"]] if choice["keep"] else [])
        write_json(tmp / "int8.json", {"recipe": RECIPE, "kept_fp32": choice})

    write_folder(folder / "int8", FORMAT, fill)
    return {**report, "kept_fp32": choice}


# Text the outlier search runs on (`outlier_matmuls`): ordinary prose of several kinds, none of any test set.
CALIBRATION = [
    "How do I install a package from a local file without reaching the network?",
    "The configuration file is read at start-up; options given on the command line override it.",
    "Our quarterly results exceeded expectations, driven by strong sales in the northern region.",
    "She walked to the station in the rain, wondering whether the last train had already left.",
    "Mix the flour and butter, then add cold water a spoonful at a time until the dough holds together.",
    "Error 404 means that the server could not find the page you asked for.",
    "The committee will meet on Tuesday to review the budget and approve the new hiring plan.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "To upgrade every installed package, run the upgrade command as the administrator.",
    "Is it safe to delete the cache folder, or will the program need it on the next run?",
    "The river flooded the lower town twice in the nineteenth century before the dam was built.",
    "Each user has a home directory; shared files belong in a group folder with the right permissions.",
]
