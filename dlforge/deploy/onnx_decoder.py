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
from dlforge.layers.attention import KVCache, padding_mask

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
        logits, cache = self.model.step(batch["input_ids"], past_cache(batch, self.n_layers))
        return SimpleNamespace(logits=logits, **presents(cache))


def past_cache(batch: dict[str, torch.Tensor], n_layers: int) -> ConcatCache:
    """The cache a step graph reads: past_key_i, past_value_i (B, H, P, D) of each layer."""
    return ConcatCache([ConcatLayerCache(batch[f"past_key_{i}"], batch[f"past_value_{i}"]) for i in range(n_layers)])


def presents(cache: ConcatCache) -> dict[str, torch.Tensor]:
    """The cache a step graph returns: present_key_i, present_value_i (B, H, P + T, D) of each layer."""
    return {f"present_{kind}_{i}": getattr(layer, kind[0]) for i, layer in enumerate(cache.layers)
            for kind in ("key", "value")}


def add_cache_specs(signature: dict[str, Any], n_layers: int, heads: int, head_dim: int) -> dict[str, Any]:
    """The past_* inputs and present_* outputs of a step graph's signature, B and the length dynamic."""
    for i in range(n_layers):
        for kind in ("key", "value"):
            spec = {"dtype": "float32", "shape": [-1, heads, -1, head_dim]}
            signature["inputs"].append({"name": f"past_{kind}_{i}", **spec})
            signature["outputs"].append({"name": f"present_{kind}_{i}", **spec})
    return signature


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
    add_cache_specs(signature, c.n_layers, heads, head_dim)
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


# --- encoder-decoder (the seq2seq Transformer): the encoder once, then the decoder step over its own KV cache -----

ENCODER_FILE, DECODER_FILE = "encoder_model.onnx", "decoder_with_past_model.onnx"


class Encoder(torch.nn.Module):
    """forward({"input_ids", "attention_mask"}) -> memory (B, S, C): the source, encoded once per translation."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.registry_name = f"{model.registry_name} (encoder)"

    def forward(self, batch: dict[str, torch.Tensor]) -> SimpleNamespace:
        return SimpleNamespace(memory=self.model.encode(batch["input_ids"], batch["attention_mask"]))


class DecoderWithPast(torch.nn.Module):
    """forward({"decoder_input_ids", "memory", "attention_mask", "past_key_i", "past_value_i"...}) -> logits and
    the present keys and values of the decoder's self-attention. The cross-attention's keys and values are computed
    from `memory` in the graph at every step (they are not part of the cache: one input fewer per layer)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.n_layers = model.config.decoder_layers
        self.registry_name = f"{model.registry_name} (decoder step with its KV cache)"

    def forward(self, batch: dict[str, torch.Tensor]) -> SimpleNamespace:
        cache = past_cache(batch, self.n_layers)
        logits = self.model.decode(batch["decoder_input_ids"], batch["memory"], padding_mask(batch["attention_mask"]),
                                   cache)
        return SimpleNamespace(logits=logits, **presents(cache))


def is_encoder_decoder(model: torch.nn.Module) -> bool:
    return callable(getattr(model, "encode", None)) and callable(getattr(model, "start_decoding", None))


def seq2seq_graphs(model: torch.nn.Module, examples: list[dict[str, torch.Tensor]]) -> list[Graph]:
    """The encoder graph and the decoder-step graph, traced on the first held-out batch (a past of T - 2 target
    tokens and 2 new ones) and checked on the second (one new token after T - 1, and an empty past)."""
    c = model.config
    heads, head_dim, dim = c.n_heads, c.dim // c.n_heads, c.dim
    source = [{"name": n, "dtype": "int64", "shape": [-1, -1]} for n in ("input_ids", "attention_mask")]
    encoder = {"task": "translation", "inputs": source,
               "outputs": [{"name": "memory", "dtype": "float32", "shape": [-1, -1, dim]}]}
    vocab = c.target_vocab_size or c.vocab_size
    step = {"task": "translation",
            "inputs": [{"name": "decoder_input_ids", "dtype": "int64", "shape": [-1, -1]},
                       {"name": "memory", "dtype": "float32", "shape": [-1, -1, dim]}, source[1]],
            "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, -1, vocab]}]}
    add_cache_specs(step, c.decoder_layers, heads, head_dim)
    sources = [{k: ex[k] for k in ("input_ids", "attention_mask")} for ex in examples[:2]]
    t = examples[0]["decoder_input_ids"].shape[1]
    steps = [_decoder_split(model, examples[0], t - 2), _decoder_split(model, examples[1], t - 1),
             _decoder_split(model, examples[1], 0)]
    return [Graph(ENCODER_FILE, Encoder(model), encoder, sources), Graph(DECODER_FILE, DecoderWithPast(model), step,
                                                                         steps)]


@torch.no_grad()
def _decoder_split(model: torch.nn.Module, batch: dict[str, torch.Tensor], past: int) -> dict[str, Any]:
    """A step's inputs: the source's memory, the cache of the first `past` target tokens, and the rest."""
    c = model.config
    memory = model.encode(batch["input_ids"], batch["attention_mask"])
    empty = torch.zeros(len(memory), c.n_heads, 0, c.dim // c.n_heads)
    cache = ConcatCache([ConcatLayerCache(empty, empty) for _ in range(c.decoder_layers)])
    target = batch["decoder_input_ids"]
    if past:
        model.decode(target[:, :past], memory, padding_mask(batch["attention_mask"]), cache)
    out = {"decoder_input_ids": target[:, past:], "memory": memory, "attention_mask": batch["attention_mask"]}
    for i, layer in enumerate(cache.layers):
        out[f"past_key_{i}"], out[f"past_value_{i}"] = layer.k, layer.v
    return out
