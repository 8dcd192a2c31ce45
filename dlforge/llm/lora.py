"""LoRA adapters on dlforge models: add, save, load over a base model, merge. The files are peft's.

    add_lora(model, LoRAConfig(rank=8, alpha=16, dropout=0.05, targets=["qkv", "proj"]))   # the base frozen
    save_adapter(model, "adapter/", base="runs/gpt-.../model")        # adapter_config.json, adapter_model.safetensors
    model = load_with_adapter("runs/gpt-.../model", "adapter/")       # a fresh base with the adapter over it
    merge_lora(model)                                                 # W + (alpha / r) B A: plain nn.Linear again
    merge_adapter("runs/gpt-.../model", "adapter/", "merged/")        # the same, as a model folder on disk
                                                                      # (no out: runs/merged/<the adapter's run>)

`add_lora` swaps every linear layer whose name is a target, or ends with "." + a target (peft's `target_modules`
rule), for a `dlforge.layers.lora.LoRALinear` and freezes every other parameter, so only the adapters train. A
layer whose weight is shared (GPT's head, tied to the token embedding) is refused: merging into it would change the
embedding too.

An adapter folder is what peft writes, so `peft.PeftModel.from_pretrained(model, folder)` loads it (tested):
`adapter_config.json` with peft's fields (`peft_type` "LORA", `r`, `lora_alpha`, `lora_dropout`, `target_modules`,
`base_model_name_or_path`, ...) and `adapter_model.safetensors` with peft's keys
(`base_model.model.<layer>.lora_A.weight`, `...lora_B.weight`). dlforge adds a `dlforge` section to the config (peft
warns that it ignores it): the base model's registry name and config, and `base_weights_sha256`, a hash of the base
model's weights (names, dtypes, shapes and bytes), so an adapter is refused over any other base. The folder also
holds the tokenizer the adapter was trained with (it may carry a chat template the base's has not), in the form
transformers' AutoTokenizer reads, and a manifest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pydantic
import torch
from torch import nn

from dlforge.artifacts import load_trained, save_foreign_folder
from dlforge.config import LoRAConfig, validation_to_config_error
from dlforge.errors import CheckpointError, ConfigError
from dlforge.layers.lora import LoRALinear
from dlforge.runs.rundir import source_name, workspace_path

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_FORMAT = "dlforge-lora-adapter"
PEFT_PREFIX = "base_model.model."  # peft's PeftModel -> LoraModel -> the model
LORA_PARTS = (".lora_A.", ".lora_B.")


# --- adding, merging -----------------------------------------------------------------------------------------------


def find_targets(model: nn.Module, targets: list[str]) -> list[str]:
    """Names of the linear layers of `model` that `targets` select (a name, or a name's last dotted parts)."""
    chosen, unused = [], set(targets)
    for name, module in model.named_modules():
        hits = [t for t in targets if name == t or name.endswith("." + t)]
        if not hits:
            continue
        unused -= set(hits)
        if not isinstance(module, nn.Linear):
            raise ConfigError(f"train.lora.targets: {hits[0]!r} selects {name!r}, a {type(module).__name__}; LoRA "
                              "adapts linear layers")
        chosen.append(name)
    if unused:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ConfigError(f"train.lora.targets: {sorted(unused)[0]!r} names no layer of {type(model).__name__}; its "
                          f"linear layers end in {', '.join(linear)}")
    shared = _shared_parameters(model)
    for name in chosen:
        if id(model.get_submodule(name).weight) in shared:
            raise ConfigError(f"train.lora.targets: {name!r} shares its weight with another layer (tie_weights); "
                              "an update merged into it would change that layer too")
    return chosen


def add_lora(model: nn.Module, config: LoRAConfig) -> list[str]:
    """Put a LoRA adapter on each target layer and freeze everything else; return the adapted layers' names."""
    names = find_targets(model, list(config.targets))
    for p in model.parameters():
        p.requires_grad_(False)
    for name in names:
        _replace(model, name, LoRALinear(model.get_submodule(name), config.rank, config.alpha, config.dropout))
    return names


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """{name: layer} of the model's LoRA layers."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(model: nn.Module) -> list[str]:
    """Fold every adapter into its layer (W + (alpha / r) B A), leaving plain nn.Linear layers and every parameter
    trainable again; return the merged layers' names. In eval mode the outputs do not change."""
    layers = lora_layers(model)
    for name, layer in layers.items():
        _replace(model, name, layer.merged())
    for p in model.parameters():
        p.requires_grad_(True)
    return list(layers)


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _shared_parameters(model: nn.Module) -> set[int]:
    seen: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        seen[id(p)] = seen.get(id(p), 0) + 1
    return {i for i, n in seen.items() if n > 1}


def is_adapter_key(key: str) -> bool:
    return any(part in key for part in LORA_PARTS)


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' weights under peft's keys: base_model.model.<layer>.lora_A.weight (r, in), ...lora_B.weight."""
    return {PEFT_PREFIX + k: v for k, v in model.state_dict().items() if is_adapter_key(k)}


def base_weights_hash(model: nn.Module) -> str:
    """SHA-256 of the model's weights without its adapters: every tensor's name, dtype, shape and bytes, by name."""
    h = hashlib.sha256()
    for key, t in sorted(model.state_dict().items()):
        if is_adapter_key(key):
            continue
        t = t.detach().to("cpu").contiguous().reshape(-1)
        h.update(json.dumps([key, str(t.dtype), list(t.shape)]).encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# --- the adapter folder --------------------------------------------------------------------------------------------


def save_adapter(model: nn.Module, directory: str | Path, base: str = "", tokenizer: Any = None) -> Path:
    """Write the model's adapters as a peft LoRA folder (atomically, with a manifest); `base` names the base model
    (its folder), `tokenizer` the tokenizer the adapter was trained with."""

    layers = lora_layers(model)
    if not layers:
        raise CheckpointError(f"cannot save {directory}: the model has no LoRA adapters (see add_lora)")
    first = next(iter(layers.values()))
    dropout = first.lora_dropout.p if isinstance(first.lora_dropout, nn.Dropout) else 0.0
    names = list(layers)
    config = {
        "peft_type": "LORA", "task_type": None, "base_model_name_or_path": str(base), "revision": None,
        "r": first.rank, "lora_alpha": first.alpha, "lora_dropout": dropout, "target_modules": names,
        "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
        "modules_to_save": None, "use_rslora": False, "use_dora": False,
        "dlforge": {"format": ADAPTER_FORMAT, "version": 1, "model": getattr(model, "registry_name", None),
                    "config": _model_config(model), "base_weights_sha256": base_weights_hash(model),
                    "tokenizer_hash": tokenizer.hash if tokenizer is not None else None},
    }  # fmt: skip
    json_files = {ADAPTER_CONFIG: config, **(tokenizer.transformers_files() if tokenizer is not None else {})}
    return save_foreign_folder(Path(directory), ADAPTER_FORMAT, json_files, ADAPTER_WEIGHTS,
                               adapter_state_dict(model), metadata={"format": "pt"})


def read_adapter(directory: str | Path) -> tuple[LoRAConfig, dict[str, Any], dict[str, torch.Tensor]]:
    """(the LoRA settings, adapter_config.json, the adapter tensors under the layers' own keys) of a folder written
    by `save_adapter` or by peft."""
    from dlforge.artifacts import read_foreign_folder

    directory = Path(directory)
    files, tensors = read_foreign_folder(directory, ADAPTER_FORMAT, ADAPTER_WEIGHTS, [ADAPTER_CONFIG])
    raw = files[ADAPTER_CONFIG]
    where = directory / ADAPTER_CONFIG
    if not isinstance(raw, dict) or raw.get("peft_type") != "LORA":
        raise CheckpointError(f"{where}: expected a LoRA adapter config (peft_type 'LORA')")
    for key, unsupported in (("use_dora", True), ("use_rslora", True), ("fan_in_fan_out", True)):
        if raw.get(key) is unsupported:
            raise CheckpointError(f"{where}: {key} is true; dlforge's LoRA layer supports plain LoRA only")
    if raw.get("bias", "none") != "none" or raw.get("modules_to_save"):
        raise CheckpointError(f"{where}: trained biases or modules_to_save are not supported (bias must be 'none')")
    targets = raw.get("target_modules")
    if isinstance(targets, str):
        raise CheckpointError(f"{where}: target_modules is a regular expression; expected a list of layer names")
    try:
        config = LoRAConfig(rank=raw.get("r"), alpha=raw.get("lora_alpha"), dropout=raw.get("lora_dropout", 0.0),
                            targets=targets)
    except pydantic.ValidationError as exc:
        raise CheckpointError(f"{where}: {validation_to_config_error(exc, 'adapter')}") from None
    own = {k.removeprefix(PEFT_PREFIX): v for k, v in tensors.items()}
    for key in own:
        if not is_adapter_key(key):
            raise CheckpointError(f"{directory / ADAPTER_WEIGHTS}: {key!r} is not a LoRA weight (lora_A / lora_B)")
    return config, raw, own


def load_adapter(model: nn.Module, directory: str | Path) -> LoRAConfig:
    """Put the adapter of `directory` over `model` (its base: checked by weights hash when the folder records one)."""
    directory = Path(directory)
    config, raw, tensors = read_adapter(directory)
    recorded = (raw.get("dlforge") or {}).get("base_weights_sha256")
    if recorded is not None and recorded != base_weights_hash(model):
        raise CheckpointError(f"{directory}: this adapter was trained over another base model (base weights "
                              f"{recorded[:12]}.., these {base_weights_hash(model)[:12]}..; the adapter names "
                              f"{raw.get('base_model_name_or_path') or 'no base'})")
    add_lora(model, config)
    expected = {k: v for k, v in model.state_dict().items() if is_adapter_key(k)}
    for key, want in expected.items():
        found = tuple(tensors[key].shape) if key in tensors else "missing"
        if found != tuple(want.shape):
            raise CheckpointError(f"{directory / ADAPTER_WEIGHTS}: {key!r} expected shape {tuple(want.shape)}, found "
                                  f"{found}")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise CheckpointError(f"{directory / ADAPTER_WEIGHTS}: {extra[0]!r} is not a layer of this model")
    model.load_state_dict(tensors, strict=False)
    return config


def adapter_tokenizer(directory: str | Path) -> Any:
    """The tokenizer saved with an adapter, or None."""
    from dlforge.text.tokenizer import TOKENIZER_FILE, load_tokenizer

    directory = Path(directory)
    return load_tokenizer(directory) if (directory / TOKENIZER_FILE).is_file() else None


def load_with_adapter(base: str | Path, adapter: str | Path, merge: bool = False, device: str = "cpu") -> nn.Module:
    """A base model (a run or model folder) with an adapter over it, in eval mode; `merge` folds it in. `model.meta`
    is the base's, with the adapter's tokenizer when it has one (see `merged_meta`)."""

    model = load_trained(base, device="cpu")
    load_adapter(model, adapter)
    if merge:
        merge_lora(model)
    model.meta = merged_meta(model.meta, adapter)
    return model.to(device).eval()


def merged_meta(meta: dict[str, Any], adapter: str | Path) -> dict[str, Any]:
    """The base model's meta with the adapter's tokenizer files (and their hash) in place of the base's."""
    tok = adapter_tokenizer(adapter)
    if tok is None:
        return meta
    extra = {**meta["extra"], **tok.files()}
    extra["preprocessing.json"] = {**(extra.get("preprocessing.json") or {}), "tokenizer_hash": tok.hash}
    return {**meta, "extra": extra}


def merge_adapter(base: str | Path, adapter: str | Path, out: str | Path | None = None,
                  overwrite: bool = False) -> Path:
    """Write the base model (a run or model folder) with the adapter merged in as a model folder at `out` (an
    existing one only with `overwrite`; by default `runs/merged/<the adapter's run>`): loads, generates, evaluates
    and exports like any other."""
    from dlforge.artifacts import save_model
    from dlforge.paths import refuse_existing

    out = refuse_existing(out or workspace_path("merged", source_name(adapter)), overwrite)

    model = load_with_adapter(base, adapter, merge=True)
    return save_model(model, Path(out), extra_files=model.meta["extra"])


def _model_config(model: nn.Module) -> dict[str, Any] | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    return pydantic.TypeAdapter(type(config)).dump_python(config, mode="json")
