"""The RAG embedder in int8: `dlforge rag index --embedder int8`.

The BERT sentence embedder (all-MiniLM-L6-v2, or a dlforge BERT run) is exported to ONNX by `dlforge.deploy`
(checked against PyTorch within 1e-4), then quantized by onnxruntime's dynamic int8 as `dlforge quantize --mode
dynamic` does it: int8 per-channel weights for the MatMuls and the embedding tables, activations quantized on the
fly. The tokenization, the batching by length and the mean pooling are the fp32 embedder's (`SentenceEmbedder`);
only the network runs in onnxruntime.

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
RECIPE = "onnxruntime quantize_dynamic: QInt8 per-channel weights of MatMul/Gemm/Gather, dynamic uint8 activations"
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
    from dlforge.deploy.onnx_export import export_onnx, ort_session, require_onnx
    from dlforge.deploy.quantize import DYNAMIC_OPS

    require_onnx()
    graph = folder / "int8" / GRAPH
    if not graph.is_file():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        from dlforge.artifacts import write_folder

        texts = ["an example sentence to trace the graph with", "and a second, longer one, so that the batch and "
                 "the length are both traced as dynamic dimensions of the exported graph", "short", "three more",
                 "to check the export at another batch size and length"]
        batches = [next(inner.padded_batches(texts[:2], 2))[1:], next(inner.padded_batches(texts[2:], 3))[1:]]
        examples = [{"input_ids": ids, "attention_mask": mask} for ids, mask in batches]
        signature = {"task": "embedding", "inputs": [{"name": n, "dtype": "int64", "shape": [-1, -1]}
                                                     for n in ("input_ids", "attention_mask")],
                     "outputs": [{"name": "embeddings", "dtype": "float32", "shape": [-1, inner.dim]}]}
        export_onnx(_embeddings(inner.model), signature, examples, folder / "fp32", source={"model": inner.name})

        def fill(tmp: Path) -> None:
            quantize_dynamic(folder / "fp32" / GRAPH, tmp / GRAPH, weight_type=QuantType.QInt8,
                             op_types_to_quantize=list(DYNAMIC_OPS), per_channel=True)

        write_folder(folder / "int8", "dlforge-onnx", fill)
    return ort_session(graph)
