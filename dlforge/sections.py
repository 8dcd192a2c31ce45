"""The base of every config section, and the check of a data or model section from the catalog index.

`Section` is a pydantic model that refuses unknown keys and refuses true/false where a number goes (pydantic would
read `train.max_epochs=true` as one epoch). `check_indexed_section` checks the keys of a built-in model or dataset
from `dlforge.catalog_index`, their types and bounds, before that model's or dataset's module (and torch) is
imported: `dlforge.config.check_outline` calls it, so that a typo is told in a fraction of a second.
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, create_model, field_validator

from dlforge import aliases
from dlforge.errors import unknown_key, validation_to_config_error


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        expected = bool_for_number(cls.model_fields[info.field_name].annotation, value)
        if expected:
            raise ValueError(f"expected {expected}")
        return value


def bool_for_number(annotation: Any, value: Any) -> str | None:
    """What a field takes ('an integer', 'a number') when `value` puts true/false where it takes numbers only, in
    the field itself or in its list or tuple; None otherwise. Pydantic would quietly read true as 1 there
    (`train.max_epochs=true` as one epoch)."""
    if isinstance(value, bool):
        return _number_kind(_union_args(annotation))
    if isinstance(value, list | tuple):
        for arg in _union_args(annotation):
            if typing.get_origin(arg) in (list, tuple) and any(isinstance(v, bool) for v in value):
                expected = _number_kind(tuple(a for a in typing.get_args(arg) if a is not Ellipsis))
                if expected:
                    return expected
    return None


def _union_args(annotation: Any) -> tuple:
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return typing.get_args(annotation) if union else (annotation,)


def _number_kind(kinds: tuple) -> str | None:
    if bool in kinds:
        return None
    return "a number" if float in kinds else "an integer" if int in kinds else None


def check_indexed_section(kind: str, section: str, name: str, values: dict[str, Any]) -> None:
    """The keys given to built-in model or dataset `name`, checked from the catalog index before its module (and
    torch) loads: an unknown key, a wrong type, a value out of bounds is told in a fraction of a second. The config
    class checks everything again once imported (what only it can tell: a key's relation to another)."""
    from dlforge.registry import indexed_fields

    fields = indexed_fields(kind, name)
    if fields is None:
        return
    given = {}
    for key, value in values.items():
        if key == "name":
            continue  # the registry checked it
        if key not in fields:
            if kind == "model" and aliases.MODEL_KEYS.get(key) in fields:
                continue  # an old name: renamed, with its warning, where the model section is validated
            raise unknown_key(f"{section}.{key}", [f"{section}.{k}" for k in fields])
        given[key] = value
    try:
        _indexed_model(kind, name, tuple(given)).model_validate(given)
    except ValidationError as exc:
        raise validation_to_config_error(exc, prefix=section, fields=list(fields)) from None


_INDEX_TYPES = {"Any": Any, "Literal": Literal, "None": None, "int": int, "float": float, "str": str, "bool": bool,
                "list": list, "dict": dict}


@functools.lru_cache(maxsize=64)
def _indexed_model(kind: str, name: str, keys: tuple[str, ...]) -> type[Section]:
    """A pydantic model of `keys` of `name`'s config, from their types and bounds in the index (written there by
    scripts/docs/catalog_index.py from int, float, str, bool, None, Any, list, dict, Literal and unions only)."""
    from dlforge.registry import indexed_fields

    fields = indexed_fields(kind, name) or {}
    spec = {}
    for key in keys:
        text, bounds = fields[key]
        spec[key] = (eval(text, {"__builtins__": {}}, _INDEX_TYPES), Field(..., **bounds))  # noqa: S307
    return create_model(f"{name}_{kind}", __base__=Section, **spec)
