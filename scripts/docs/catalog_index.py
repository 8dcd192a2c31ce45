"""Write dlforge/catalog_index.py: which module registers each built-in model, dataset and task, and the config keys
of each model and dataset with their types, read from the loaded zoo. The registry uses it to import only the one
file a name needs, and config validation to check a model or data section before torch loads (`dlforge.registry`,
`dlforge.config.check_outline`). A test checks that the index is up to date; rerun this script after adding or
renaming a model, dataset, task or config field:

    python scripts/docs/catalog_index.py
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path

import annotated_types

from dlforge import registry
from dlforge.cli.main import run_script

INDEX = Path(__file__).resolve().parents[2] / "dlforge" / "catalog_index.py"

HEADER = '''"""Which module registers each built-in model, dataset and task, and each model's and dataset's config keys.

Written by scripts/docs/catalog_index.py from the loaded zoo; do not edit by hand: rerun the script (a test checks it).
`dlforge.registry` imports the one module a name needs instead of the whole zoo, and `dlforge.config` checks a model
or data section from CONFIGS before torch loads: each key's type (`Any` where only the config class itself can tell)
and bounds. The config class checks everything again once its module is imported.
"""

'''
SIMPLE = {int: "int", float: "float", str: "str", bool: "bool", type(None): "None", typing.Any: "Any"}
BOUNDS = {annotated_types.Ge: "ge", annotated_types.Gt: "gt", annotated_types.Le: "le", annotated_types.Lt: "lt",
          annotated_types.MinLen: "min_length", annotated_types.MaxLen: "max_length"}
# before-validators known to rewrite only these keys' values: one only refuses (dlforge.config.Section has it too),
# one fills in a default for None (fashion_mnist's val_size); any other makes its keys (or a model validator, all) Any
KNOWN_BEFORE = {"_no_bool_for_numbers": (), "_default_val_size": ("val_size",)}


def type_text(annotation: typing.Any) -> str | None:
    """`annotation` as the index writes it, from int, float, str, bool, None, Any, list, dict, Literal and unions
    only; None for anything else (a nested config, an Annotated validator)."""
    if annotation in SIMPLE:
        return SIMPLE[annotation]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    parts = [type_text(a) for a in args]
    if None in parts:
        return None
    if origin in (typing.Union, types.UnionType):
        return " | ".join(parts)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(parts)}]"
    return None


def fields_of(config_cls: type) -> dict[str, tuple[str, dict[str, typing.Any]]]:
    """Each field of a config class: (its type as text, its bounds); a field that a before-validator may rewrite,
    and one of a class with a before model validator, is `Any`."""
    fields = getattr(config_cls, "__pydantic_fields__", None) or config_cls.model_fields
    decorators = config_cls.__pydantic_decorators__
    rewritten: set[str] = set()
    for name, deco in decorators.field_validators.items():
        if deco.info.mode != "after":
            may = set(fields) if "*" in deco.info.fields else set(deco.info.fields)
            rewritten |= set(KNOWN_BEFORE[name]) if name in KNOWN_BEFORE else may
    for name, deco in decorators.model_validators.items():
        if deco.info.mode != "after":
            rewritten |= set(KNOWN_BEFORE[name]) if name in KNOWN_BEFORE else set(fields)
    out = {}
    for name in registry.config_fields(config_cls):
        info = fields[name]
        text = None if name in rewritten else type_text(info.annotation)
        bounds = {BOUNDS[type(m)]: getattr(m, BOUNDS[type(m)]) for m in info.metadata if type(m) in BOUNDS}
        out[name] = (text or "Any", bounds if text else {})
    return out


def builtin(entry: registry.Entry) -> bool:
    return entry.fn.__module__.startswith("dlforge.")


def class_name(config_cls: type) -> str:
    return f"{config_cls.__module__}.{config_cls.__qualname__}"


def index_text() -> str:
    """The text of dlforge/catalog_index.py for the zoo as it is now (plug-ins from other packages left out)."""
    registry.load_plugins()
    entries = [e for e in registry.model_entries() + registry.dataset_entries() if builtin(e)]
    configs = {class_name(e.config_cls): fields_of(e.config_cls) for e in entries}
    models = {e.name: (e.fn.__module__, class_name(e.config_cls)) for e in registry.model_entries() if builtin(e)}
    datasets = {e.name: (e.fn.__module__, class_name(e.config_cls)) for e in registry.dataset_entries() if builtin(e)}
    tasks = {name: registry.task_entry(name).fn.__module__ for name in registry.list_tasks()
             if builtin(registry.task_entry(name))}
    lines = [HEADER.rstrip("\n"), "", "CONFIGS = {  # config class: {key: (type, bounds)}"]
    for cls in sorted(configs):
        lines.append(f"    {cls!r}: {{")
        lines += _packed([f"{k!r}: ({t!r}, {b!r})," for k, (t, b) in configs[cls].items()], "        ")
        lines.append("    },")
    lines.append("}")
    named = "name: (module, config class)"
    for title, table, what in (("MODELS", models, named), ("DATASETS", datasets, named),
                               ("TASKS", tasks, "name: module")):
        lines += ["", f"{title} = {{  # {what}", *(f"    {k!r}: {table[k]!r}," for k in sorted(table)), "}"]
    return "\n".join(lines) + "\n"


def _packed(items: list[str], indent: str, width: int = 120) -> list[str]:
    """`items` on as few lines as fit in `width`, none broken."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + 1 + len(item) <= width:
            lines[-1] += " " + item
        else:
            lines.append(indent + item)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the index is out of date, write nothing")
    args = parser.parse_args()
    text = index_text()
    if args.check:
        raise SystemExit(0 if INDEX.read_text() == text else 1)
    INDEX.write_text(text)
    print(f"wrote {INDEX}")


if __name__ == "__main__":
    run_script(main)
