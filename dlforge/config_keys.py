"""The config reference: every key of a section, its type, default, allowed values and description, read from the
config schema and the registered dataset and model config classes (`dlforge config keys`, and the generated
docs/guides/config-reference.md)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal

from pydantic import BaseModel

from dlforge.config import Config, TrainConfig
from dlforge.errors import ConfigError

_BOUNDS = {"Gt": ">", "Ge": ">=", "Lt": "<", "Le": "<=", "MinLen": "length >=", "MaxLen": "length <="}


def config_keys(section: str, name: str | None = None) -> list[dict[str, Any]]:
    """One row per key of a config section (`dlforge config keys`): `run` (the top level), `train`, or the config
    class of a dataset (`data`, `name` a dataset) or a model (`model`, `name` a model), nested sections flattened
    into dotted keys. Each row: key, type, default (JSON; "required" when there is none), allowed, description."""
    from dlforge.registry import dataset_entry, model_entry

    if section == "run":
        return _key_rows(Config, "", skip={"data", "model", "train"})
    if section == "train":
        return _key_rows(TrainConfig, "train.")
    if section in ("data", "model"):
        if name is None:
            listing = "datasets" if section == "data" else "models"
            raise ConfigError(f"config keys {section}: give a name too, e.g. `dlforge config keys {section} "
                              f"{'csv' if section == 'data' else 'mlp'}` (see `dlforge {listing}`)")
        entry = dataset_entry(name) if section == "data" else model_entry(name)
        return _key_rows(entry.config_cls, f"{section}.", skip={"name"})
    raise ConfigError(f"config keys {section}: unknown section; expected run, train, data NAME or model NAME")


def _key_rows(config_cls: type, prefix: str, skip: set[str] = frozenset()) -> list[dict[str, Any]]:
    fields = config_cls.model_fields if issubclass(config_cls, BaseModel) else config_cls.__pydantic_fields__
    rows = []
    for key, field in fields.items():
        if key in skip:
            continue
        sections = [a for a in getattr(field.annotation, "__args__", (field.annotation,))
                    if isinstance(a, type) and issubclass(a, BaseModel)]  # e.g. train.early_stopping
        description = field.description or ""
        if sections and not description:  # the section's docstring, first line
            description = (sections[0].__doc__ or "").strip().split("\n")[0]
        bounds = [f"{_BOUNDS[type(m).__name__]} {_bound(m)}" for m in field.metadata if type(m).__name__ in _BOUNDS]
        rows.append({"key": prefix + key, "type": _type_text(field.annotation),
                     "default": "required" if field.is_required() else _jsonable(field.get_default(
                         call_default_factory=True)),
                     "allowed": ", ".join(_allowed(field.annotation) + bounds), "description": description})
        for section in sections:
            rows += _key_rows(section, f"{prefix}{key}.")
    return rows


def _type_text(annotation: Any) -> str:
    """`int | None` -> "int | null", `Literal['a', 'b']` -> "str", `list[int]` -> "list[int]", a section ->
    "mapping"."""
    origin, args = getattr(annotation, "__origin__", None), getattr(annotation, "__args__", ())
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(dict.fromkeys(type(a).__name__ for a in args))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    if origin in (list, tuple, dict):
        return f"{origin.__name__}[{', '.join(_type_text(a) for a in args)}]"
    if args:  # a union
        return " | ".join(dict.fromkeys(_type_text(a) for a in args))
    return getattr(annotation, "__name__", str(annotation))


def _allowed(annotation: Any) -> list[str]:
    """The literal values a type allows: `Literal['a', 'b']`, also inside a union."""
    if getattr(annotation, "__origin__", None) is Literal:
        return [str(a) for a in annotation.__args__]
    return [v for a in getattr(annotation, "__args__", ()) for v in _allowed(a)]


def _bound(constraint: Any) -> Any:
    return next(iter(dataclasses.asdict(constraint).values()))


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return list(value) if isinstance(value, tuple) else value


def value_text(value: Any) -> str:
    """A default as a person writes it in YAML or an override: `adamw`, `null`, `[64, 64]`, `0.001`."""
    return value if isinstance(value, str) else json.dumps(value)
