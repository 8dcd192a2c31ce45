"""GPT-2 weights in and out: transformers' GPT2LMHeadModel folders <-> dlforge GPT models.

    model = load_gpt2("gpt2-folder/")                     # config.json + model.safetensors (or pytorch_model.bin)
    import_gpt2("gpt2-folder/")               # ... as a dlforge model folder, runs/models/gpt2-folder: dlforge.load
    export_gpt2("runs/models/gpt2-folder")    # runs/exports/gpt2-folder-gpt2: GPT2LMHeadModel.from_pretrained reads it

The two layouts hold the same numbers. transformers keeps GPT-2's original Conv1D layers, whose weights are stored
(in, out), the transpose of nn.Linear's (out, in); the fused query-key-value projection `c_attn` is ours `qkv`, q, k
and v in the same order. The buffers of old checkpoints (`attn.bias`, `attn.masked_bias`: the causal mask) are not
weights and are skipped. Only a GPT of GPT-2's design exports: learned positions, LayerNorm, an MLP (GELU), biases.

Nothing is downloaded: the folder is local (e.g. one saved with `save_pretrained`, or a copy of the hub's gpt2). A
`pytorch_model.bin` is read with `torch.load(weights_only=True)`, which unpickles tensors and nothing else.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from dlforge.artifacts import load_trained, read_foreign_weights, save_foreign_folder
from dlforge.errors import CheckpointError, DlforgeError
from dlforge.models.gpt import GPT
from dlforge.registry import create_model
from dlforge.runs.rundir import source_name, workspace_path
from dlforge.text.tokenizer import Tokenizer, has_tokenizer, load_tokenizer, model_tokenizer

# transformers' activation_function <-> dlforge's activation names
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu",
               "silu": "silu", "swish": "silu", "tanh": "tanh"}
EXPORT_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu", "silu": "silu", "tanh": "tanh"}
SKIPPED = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers of older transformers versions
GPT2_FORMAT = "transformers-gpt2"


def _layer_keys(i: int) -> list[tuple[str, str, bool]]:
    """(dlforge key, transformers key, transposed) of block i's weights."""
    ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
    return [
        (ours + "attn_norm.weight", theirs + "ln_1.weight", False),
        (ours + "attn_norm.bias", theirs + "ln_1.bias", False),
        (ours + "attn.qkv.weight", theirs + "attn.c_attn.weight", True),
        (ours + "attn.qkv.bias", theirs + "attn.c_attn.bias", False),
        (ours + "attn.proj.weight", theirs + "attn.c_proj.weight", True),
        (ours + "attn.proj.bias", theirs + "attn.c_proj.bias", False),
        (ours + "ffn_norm.weight", theirs + "ln_2.weight", False),
        (ours + "ffn_norm.bias", theirs + "ln_2.bias", False),
        (ours + "ffn.fc.weight", theirs + "mlp.c_fc.weight", True),
        (ours + "ffn.fc.bias", theirs + "mlp.c_fc.bias", False),
        (ours + "ffn.proj.weight", theirs + "mlp.c_proj.weight", True),
        (ours + "ffn.proj.bias", theirs + "mlp.c_proj.bias", False),
    ]


def key_map(n_layers: int, tied: bool) -> list[tuple[str, str, bool]]:
    """Every weight of an n_layers GPT-2: (dlforge key, transformers key, whether the matrix is transposed)."""
    keys = [("tok_emb.weight", "transformer.wte.weight", False), ("pos_emb.weight", "transformer.wpe.weight", False)]
    for i in range(n_layers):
        keys += _layer_keys(i)
    keys += [("norm.weight", "transformer.ln_f.weight", False), ("norm.bias", "transformer.ln_f.bias", False)]
    if not tied:
        keys.append(("head.weight", "lm_head.weight", False))
    return keys


# --- in ----------------------------------------------------------------------------------------------------------


def gpt2_config(hf: dict[str, Any], source: str = "config.json") -> dict[str, Any]:
    """A transformers GPT2Config (as its config.json dict) -> the keyword arguments of dlforge's `gpt2`."""
    if hf.get("model_type", "gpt2") != "gpt2":
        raise CheckpointError(f"{source}: model_type {hf.get('model_type')!r}, expected 'gpt2'")
    act = hf.get("activation_function", "gelu_new")
    if act not in ACTIVATIONS:
        raise CheckpointError(f"{source}: activation_function {act!r} is not supported; expected one of "
                              f"{', '.join(ACTIVATIONS)}")
    for key, ok in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                    ("reorder_and_upcast_attn", False), ("add_cross_attention", False)):
        if hf.get(key, ok) != ok:
            raise CheckpointError(f"{source}: {key} = {hf[key]!r} is not supported (expected {ok!r})")
    try:
        dropout = float(hf.get("resid_pdrop", 0.0))
        return {"vocab_size": int(hf["vocab_size"]), "context": int(hf["n_positions"]), "dim": int(hf["n_embd"]),
                "n_layers": int(hf["n_layer"]), "n_heads": int(hf["n_head"]), "positions": "learned",
                "norm": "layernorm", "norm_eps": float(hf.get("layer_norm_epsilon", 1e-5)), "ffn": "mlp",
                "ffn_hidden": hf.get("n_inner"), "act": ACTIVATIONS[act], "bias": True,
                "tie_weights": bool(hf.get("tie_word_embeddings", True)), "dropout": dropout}
    except KeyError as exc:
        raise CheckpointError(f"{source}: missing {exc.args[0]!r}") from None


def gpt2_state_dict(tensors: dict[str, torch.Tensor], n_layers: int, tied: bool, source: str
                    ) -> dict[str, torch.Tensor]:
    """transformers' GPT2LMHeadModel (or GPT2Model) state dict -> dlforge GPT's; every weight accounted for."""
    found = {}
    for key, t in tensors.items():
        if key.endswith(SKIPPED):
            continue
        if not key.startswith(("transformer.", "lm_head.")):  # saved from GPT2Model: no prefix
            key = "transformer." + key
        found[key] = t
    if tied:
        found.pop("lm_head.weight", None)  # the same matrix as wte, when saved at all
    out = {}
    for ours, theirs, transposed in key_map(n_layers, tied):
        if theirs not in found:
            raise CheckpointError(f"{source}: weight {theirs!r} missing")
        t = found.pop(theirs)
        out[ours] = t.t().contiguous() if transposed else t
    if found:
        raise CheckpointError(f"{source}: unexpected weight {next(iter(found))!r} (not part of GPT-2)")
    if tied:
        out["head.weight"] = out["tok_emb.weight"]
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found (expected a transformers GPT-2 folder)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def load_gpt2(folder: str | Path) -> GPT:
    """A dlforge GPT (registered as `gpt2`, eval mode, fp32) with the weights of a local transformers GPT-2 folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such folder (expected config.json and model.safetensors)")
    config = gpt2_config(_read_json(folder / "config.json"), source=str(folder / "config.json"))
    tensors, path = read_foreign_weights(folder)
    model = create_model("gpt2", **config)
    state = gpt2_state_dict(tensors, config["n_layers"], config["tie_weights"], str(path))
    expected = model.state_dict()
    for key, t in state.items():
        if tuple(t.shape) != tuple(expected[key].shape):
            raise CheckpointError(f"{path}: weight for {key!r} has shape {tuple(t.shape)}, the config.json implies "
                                  f"{tuple(expected[key].shape)}")
    model.load_state_dict({k: t.float() for k, t in state.items()}, strict=True)
    return model.eval()


def import_gpt2(folder: str | Path, out: str | Path | None = None, overwrite: bool = False) -> Path:
    """Convert a local transformers GPT-2 folder into a dlforge model folder at `out` (read by `dlforge.load`; an
    existing `out` only with `overwrite`; by default `runs/models/<folder's name>`). The folder's tokenizer
    (tokenizer.json, with tokenizer_config.json if any) travels along; without one that dlforge reads, a warning says
    the model cannot generate text yet."""
    from dlforge.artifacts import save_model
    from dlforge.paths import refuse_existing

    out = refuse_existing(out or workspace_path("models", Path(folder).resolve().name), overwrite)

    model = load_gpt2(folder)
    extra: dict[str, dict] = {"source.json": {"format": GPT2_FORMAT, "folder": str(Path(folder).resolve())}}
    tokenizer = _tokenizer_of(Path(folder))
    if tokenizer is not None:  # as a run's model folder holds it: its files, and its hash to check against
        extra.update(tokenizer.files())
        extra["preprocessing.json"] = {"kind": "tokens", "tokenizer_hash": tokenizer.hash}
    return save_model(model, Path(out), extra_files=extra)


def _tokenizer_of(folder: Path) -> Tokenizer | None:
    """The folder's tokenizer, or None with a warning: the weights convert all the same, but generating text needs
    one (`dlforge generate` says so)."""
    if not (folder / "tokenizer.json").is_file():
        warnings.warn(f"{folder}: no tokenizer.json, so the model is imported without a tokenizer and cannot "
                      "generate text; put the tokenizer.json beside the weights and import again", stacklevel=3)
        return None
    try:
        return load_tokenizer(folder)
    except DlforgeError as exc:
        warnings.warn(f"{folder}: its tokenizer is not imported ({exc})", stacklevel=3)
        return None


# --- out ---------------------------------------------------------------------------------------------------------


def exportable(model: torch.nn.Module) -> None:
    """Raise a DlforgeError naming the first setting GPT-2's format cannot hold."""
    if not isinstance(model, GPT):
        raise DlforgeError(f"cannot export {type(model).__name__} to GPT-2 format: only gpt models export")
    c = model.config
    wanted = {"positions": "learned", "norm": "layernorm", "ffn": "mlp", "bias": True}
    for key, value in wanted.items():
        if getattr(c, key) != value:
            raise DlforgeError(f"cannot export to GPT-2 format: model.{key} is {getattr(c, key)!r}; GPT-2 has "
                               f"{key} {value!r}")
    if c.act not in EXPORT_ACTIVATIONS:
        raise DlforgeError(f"cannot export to GPT-2 format: model.act {c.act!r} has no transformers name; expected "
                           f"one of {', '.join(EXPORT_ACTIVATIONS)}")


def to_gpt2(model: GPT, tokenizer: Tokenizer | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A dlforge GPT -> (transformers' config.json dict, GPT2LMHeadModel state dict, the tied head left out); with
    its `tokenizer`, the config names its end- and beginning-of-text ids, so transformers' generate stops where
    dlforge's does."""
    exportable(model)
    c = model.config
    if tokenizer is not None and tokenizer.vocab_size > c.vocab_size:
        raise DlforgeError(f"cannot export to GPT-2 format: the tokenizer has {tokenizer.vocab_size} tokens, the "
                           f"model only {c.vocab_size}")
    hf_config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": c.vocab_size,
        "n_positions": c.context, "n_embd": c.dim, "n_layer": c.n_layers, "n_head": c.n_heads,
        "n_inner": None if c.hidden == 4 * c.dim else c.hidden, "activation_function": EXPORT_ACTIVATIONS[c.act],
        "layer_norm_epsilon": c.norm_eps, "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.dropout,
        "initializer_range": 0.02, "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False, "tie_word_embeddings": c.tie_weights, "use_cache": True,
        "bos_token_id": tokenizer and tokenizer.bos_id, "eos_token_id": tokenizer and tokenizer.eos_id,
        "pad_token_id": None,
    }  # fmt: skip
    state = model.state_dict()
    tensors = {theirs: (state[ours].t() if transposed else state[ours]).float()
               for ours, theirs, transposed in key_map(c.n_layers, c.tie_weights)}
    return hf_config, tensors


def export_gpt2(run: str | Path, out: str | Path | None = None, overwrite: bool = False) -> Path:
    """Write a run's GPT (or a model folder's) as a transformers GPT-2 folder (an existing `out` only with
    `overwrite`; by default `runs/exports/<run>-gpt2`): config.json + model.safetensors, and the tokenizer the model
    was trained with as tokenizer.json + tokenizer_config.json, so that AutoTokenizer and AutoModelForCausalLM load the
    folder and generate what dlforge does, and `import_gpt2` brings it back. A model folder without a tokenizer exports
    its weights alone."""
    from dlforge.paths import refuse_existing

    out = refuse_existing(out or workspace_path("exports", f"{source_name(run)}-gpt2"), overwrite)

    model = load_trained(run)
    tokenizer = model_tokenizer(model.meta, str(run)) if has_tokenizer(model.meta) else None
    hf_config, tensors = to_gpt2(model, tokenizer)
    files = {"config.json": hf_config, **(tokenizer.transformers_files() if tokenizer is not None else {})}
    return save_foreign_folder(Path(out), GPT2_FORMAT, files, "model.safetensors", tensors, metadata={"format": "pt"})
