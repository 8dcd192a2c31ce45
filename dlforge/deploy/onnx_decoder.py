"""The decoder step of a KV-cached language model (GPT) as an ONNX graph, its cache as explicit inputs and outputs.

    model_with_past.onnx: input_ids (B, T), past_key_0, past_value_0, ... (B, H, P, D)
                          -> logits (B, T, V), present_key_0, present_value_0, ... (B, H, P + T, D)

B, T and P are dynamic. The first call of a generation is model.onnx (the prompt, no cache) or this graph with P = 0
tensors; each next call feeds the presents back as the pasts, as Hugging Face's optimum lays out a decoder "with
past". The model's own `step(input_ids, cache)` is traced with a cache that grows by concatenation (`ConcatCache`,
the interface of `dlforge.layers.attention.KVCache`), since a graph can't write into a preallocated buffer.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from dlforge.deploy.onnx_export import Graph
from dlforge.layers.attention import KVCache

FILE = "model_with_past.onnx"


class ConcatLayerCache:
    """One layer's keys and values (B, H, P, D), grown by concatenation."""

    static = None  # self-attention only: no cross-attention memory

    def __init__(self, k: torch.Tensor, v: torch.Tensor):
        self.k, self.v = k, v

    @property
    def length(self) -> int:
        return self.k.shape[2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k, self.v = torch.cat([self.k, k], dim=2), torch.cat([self.v, v], dim=2)
        return self.k, self.v


class ConcatCache:
    def __init__(self, layers: list[ConcatLayerCache]):
        self.layers = layers

    @property
    def length(self) -> int:
        return self.layers[0].length


class WithPast(torch.nn.Module):
    """forward({"input_ids", "past_key_i", "past_value_i"...}) -> logits and the present keys and values."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.n_layers = model.config.n_layers
        self.registry_name = f"{model.registry_name} (decoder step with its KV cache)"

    def forward(self, batch: dict[str, torch.Tensor]) -> SimpleNamespace:
        cache = ConcatCache([ConcatLayerCache(batch[f"past_key_{i}"], batch[f"past_value_{i}"])
                             for i in range(self.n_layers)])
        logits, cache = self.model.step(batch["input_ids"], cache)
        present = {f"present_{kind}_{i}": getattr(layer, kind[0]) for i, layer in enumerate(cache.layers)
                   for kind in ("key", "value")}
        return SimpleNamespace(logits=logits, **present)


def has_kv_cache(model: torch.nn.Module) -> bool:
    """True for a decoder whose generation state is a `KVCache` (GPT), whose step this graph exports."""
    init = getattr(model, "init_state", None)
    return init is not None and isinstance(init(1, device="cpu"), KVCache)


def with_past_graph(model: torch.nn.Module, input_ids: torch.Tensor) -> Graph:
    """The decoder-step graph, traced and checked on held-out token rows `input_ids` (B >= 7, T >= 4): traced with
    2 rows, a past of T - 2 tokens and 2 new ones; checked again on 5 rows, one new token after T - 1 (a decode
    step), and on 5 rows with an empty past (a prompt)."""
    c = model.config
    heads, head_dim = c.n_heads, c.dim // c.n_heads
    signature = {"task": "language_modeling", "inputs": [{"name": "input_ids", "dtype": "int64", "shape": [-1, -1]}],
                 "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, -1, c.vocab_size]}]}
    for i in range(c.n_layers):
        for kind in ("key", "value"):
            spec = {"dtype": "float32", "shape": [-1, heads, -1, head_dim]}
            signature["inputs"].append({"name": f"past_{kind}_{i}", **spec})
            signature["outputs"].append({"name": f"present_{kind}_{i}", **spec})
    t = input_ids.shape[1]
    examples = [_split(model, input_ids[:2], t - 2), _split(model, input_ids[2:7], t - 1),
                _split(model, input_ids[2:7], 0)]
    return Graph(FILE, WithPast(model), signature, examples)


@torch.no_grad()
def _split(model: torch.nn.Module, rows: torch.Tensor, past: int) -> dict[str, Any]:
    """The inputs of a step: the cache of rows[:, :past] (from the model's own step), and rows[:, past:]."""
    c = model.config
    empty = torch.zeros(len(rows), c.n_heads, 0, c.dim // c.n_heads)
    cache = ConcatCache([ConcatLayerCache(empty, empty) for _ in range(c.n_layers)])
    if past:
        model.step(rows[:, :past], cache)
    batch = {"input_ids": rows[:, past:]}
    for i, layer in enumerate(cache.layers):
        batch[f"past_key_{i}"], batch[f"past_value_{i}"] = layer.k, layer.v
    return batch
