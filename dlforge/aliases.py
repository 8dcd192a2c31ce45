"""Old names that still work: each is read as its new name, with one `warning:` line on stderr.

Some things were renamed so that one word means one thing across dlforge (STYLE.md rule 15); a saved run, a model
folder or a user's YAML file that uses an old name keeps working. The tables below are the only list of old names:

- `MODEL_KEYS`, model config keys: renamed where a model section is validated (`dlforge.config`), where a model is
  built (`dlforge.registry.create_model`) and where a model folder's config.json is read (`dlforge.artifacts`). A key
  is renamed only for a model whose config has the new name and not the old one (`hidden_size` becomes `dim` for
  the recurrent models; for the MLP it stays an unknown key).
- `DATASETS`, dataset names: renamed where a data section is validated and where a dataset is looked up.
- `PRESETS`, preset names: renamed where a preset is resolved.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dlforge.errors import ConfigError, warn

MODEL_KEYS = {
    "n_layer": "n_layers",  # gpt (GPT-2's name)
    "n_head": "n_heads",  # gpt (GPT-2's name)
    "max_len": "context",  # bert, transformer_seq2seq: the positions the model has
    "num_layers": "n_layers",  # the recurrent models (torch's name)
    "hidden_size": "dim",  # the recurrent models (torch's name)
}
DATASETS = {"fair": "affairs"}  # statsmodels' name for the affairs survey; `fairness` is a different thing
PRESETS = {"fair-mlp": "affairs-mlp"}


def deprecated(old: str, new: str, where: str = "") -> None:
    """Say on stderr, in one line, that `old` is read as `new`; `where` (e.g. "path/config.json: ") comes first."""
    warn(f"{where}{old} is deprecated; use {new}")


def model_keys(values: dict[str, Any], fields: Iterable[str], where: str = "") -> dict[str, Any]:
    """`values` (a model section without its name) with every old key that `fields` (the model's config fields)
    knows by its new name renamed, in place of the old one."""
    fields = set(fields)
    renamed: dict[str, Any] = {}
    for key, value in values.items():
        new = MODEL_KEYS.get(key)
        if new is not None and new in fields and key not in fields:
            if new in values:
                raise ConfigError(f"model.{key}: the old name of model.{new}, which is given too; keep "
                                  f"model.{new} only")
            deprecated(f"model.{key}", f"model.{new}", where)
            key = new
        renamed[key] = value
    return renamed


def dataset_name(name: str) -> str:
    """The current name of dataset `name` (itself unless it is an old one)."""
    new = DATASETS.get(name)
    if new is None:
        return name
    deprecated(f"dataset {name!r}", repr(new))
    return new


def preset_name(name: str) -> str:
    """The current name of preset `name` (itself unless it is an old one)."""
    new = PRESETS.get(name)
    if new is None:
        return name
    deprecated(f"preset {name!r}", repr(new))
    return new
