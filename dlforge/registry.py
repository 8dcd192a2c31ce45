"""Registries: a name turns into a model or a dataset, for the CLI and the tests alike (the timm way).

A model is registered by a factory function whose name is the model's name; it takes keyword overrides of the
model's config dataclass and returns the model. A preset is such a function with some defaults filled in:

    @register_model(MLPConfig)
    def perceptron(**overrides) -> MLP:
        return MLP(MLPConfig(**{"hidden": [], **overrides}))

A dataset is registered the same way with its pydantic config class; its builder takes that config and returns a
`DataBundle` (see `dlforge.data`). A task (`dlforge.tasks`) is registered by its class under the name a dataset's
`info["task"]` gives.

This module imports nothing of the zoo: it sits on the ground floor, and the modules that register things import it.
A lookup of a built-in name imports only the module that registers it, found in `dlforge.catalog_index` (generated
from the zoo, checked by a test), so that `dlforge train wine-mlp` loads the MLP and the tabular data, not every
model. Any other lookup, and every listing, loads the plug-ins: `dlforge.catalog` (every built-in model, dataset and
task) and any package that declares a `dlforge.plugins` entry point (a module or a callable to run), so a
third-party model, dataset or task is one installed package away. Loading a plug-in by its name is the one way
down-to-up that the floors allow, and it happens at run time only.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from dlforge import aliases
from dlforge.errors import ConfigError, validation_to_config_error


@dataclass(frozen=True)
class Entry:
    name: str
    fn: Callable[..., Any]
    config_cls: type
    doc: str


_MODELS: dict[str, Entry] = {}
_DATASETS: dict[str, Entry] = {}
_TASKS: dict[str, Entry] = {}
BUILTIN_PLUGINS = "dlforge.catalog"  # imported by name on the first lookup (see the module's docstring)
PLUGIN_GROUP = "dlforge.plugins"
_loaded = False
_load_error: ConfigError | None = None  # a plug-in that failed: every later lookup fails with it too


def _first_line(fn: Callable) -> str:
    return (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""


def _register(table: dict[str, Entry], kind: str, config_cls: type, name: str | None):
    def deco(fn: Callable) -> Callable:
        key = name or fn.__name__
        if key in table and table[key].fn is not fn:
            raise ValueError(f"{kind} {key!r} is registered twice")
        table[key] = Entry(key, fn, config_cls, _first_line(fn))
        return fn

    return deco


def register_model(config_cls: type, name: str | None = None):
    """Register a model factory `fn(**overrides) -> nn.Module` under `name` (default: the function's name)."""
    return _register(_MODELS, "model", config_cls, name)


def register_dataset(config_cls: type, name: str | None = None):
    """Register a dataset builder `fn(config) -> DataBundle` under `name` (default: the function's name)."""
    return _register(_DATASETS, "dataset", config_cls, name)


def register_task(name: str):
    """Register a task class (`dlforge.tasks.base.Task`) under `name`, the value of a dataset's `info["task"]`."""

    def deco(cls: type) -> type:
        if name in _TASKS and _TASKS[name].fn is not cls:
            raise ValueError(f"task {name!r} is registered twice")
        _TASKS[name] = Entry(name, cls, cls, _first_line(cls))
        return cls

    return deco


def load_plugins() -> None:
    """Import the built-in catalog and every installed `dlforge.plugins` entry point, once; their @register_*
    decorators fill the tables."""
    global _loaded, _load_error
    if _loaded:
        if _load_error is not None:
            raise _load_error
        return
    _loaded = True
    importlib.import_module(BUILTIN_PLUGINS)
    for ep in entry_points(group=PLUGIN_GROUP):
        if ep.value == BUILTIN_PLUGINS:
            continue
        try:
            loaded = ep.load()
            if callable(loaded):
                loaded()
        except Exception as exc:  # a broken third-party plug-in is named, not a traceback from deep inside
            _load_error = ConfigError(f"plug-in {ep.name!r} ({ep.value}, entry point group {PLUGIN_GROUP!r}) failed "
                                      f"to load: {type(exc).__name__}: {exc}")
            raise _load_error from exc



def _index(kind: str) -> dict[str, Any]:
    """The catalog index's table of `kind` (model, dataset or task), imported at the first lookup, as the zoo is."""
    from dlforge import catalog_index

    return {"model": catalog_index.MODELS, "dataset": catalog_index.DATASETS, "task": catalog_index.TASKS}[kind]


def indexed_keys(kind: str, name: str) -> tuple[str, ...] | None:
    """The config keys of the built-in model or dataset (`kind`) `name`, from the index, without importing it; None
    for a name the index does not hold (a plug-in's, an old one, a typo)."""
    where = _index(kind).get(name)
    return where[1] if where is not None else None


def _import_one(table: dict[str, Entry], kind: str, name: str) -> None:
    """Import the one built-in module that registers `name`, when the index knows it and nothing has yet."""
    where = _index(kind).get(name)
    if where is not None and name not in table and not _loaded:
        importlib.import_module(where if isinstance(where, str) else where[0])


def _lookup(table: dict[str, Entry], kind: str, name: str, key: str) -> Entry:  # kind: model, dataset or task
    _import_one(table, kind, name)
    if name not in table:
        load_plugins()
    if name not in table:
        close = difflib.get_close_matches(name, list(table), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(table))}"
        raise ConfigError(f"{key}: unknown {kind} {name!r}{hint}")
    return table[name]


def model_entry(name: str) -> Entry:
    return _lookup(_MODELS, "model", name, "model.name")


def dataset_entry(name: str) -> Entry:
    """The registered dataset `name`; an old name (`dlforge.aliases.DATASETS`) finds its new one, with a warning."""
    _import_one(_DATASETS, "dataset", name)
    if name not in _DATASETS:
        load_plugins()
    if name not in _DATASETS and name in aliases.DATASETS:
        name = aliases.dataset_name(name)
    return _lookup(_DATASETS, "dataset", name, "data.name")


def task_entry(name: str | None) -> Entry:
    return _lookup(_TASKS, "task", str(name), "task")


def create_task(name: str | None) -> Any:
    """The task object registered under `name` (a dataset's `info["task"]`), e.g. `create_task("classification")`."""
    return task_entry(name).fn()


def create_model(name: str, **overrides: Any):
    """Build the registered model `name` with config overrides, e.g. `create_model("mlp", hidden=[64])`; an old key
    (`dlforge.aliases.MODEL_KEYS`) is read as its new one, with a warning."""
    entry = model_entry(name)
    overrides = aliases.model_keys(overrides, config_fields(entry.config_cls))
    try:
        model = entry.fn(**overrides)
    except Exception as exc:  # pydantic's ValidationError, re-worded with the key it is about
        err = validation_to_config_error(exc, prefix="model", fields=config_fields(entry.config_cls))
        if err is None:
            raise
        raise err from exc
    model.registry_name = name
    return model


def list_models() -> list[str]:
    load_plugins()
    return sorted(_MODELS)


def list_datasets() -> list[str]:
    load_plugins()
    return sorted(_DATASETS)


def list_tasks() -> list[str]:
    load_plugins()
    return sorted(_TASKS)


def model_entries() -> list[Entry]:
    load_plugins()
    return [_MODELS[k] for k in sorted(_MODELS)]


def dataset_entries() -> list[Entry]:
    load_plugins()
    return [_DATASETS[k] for k in sorted(_DATASETS)]


def config_fields(config_cls: type) -> list[str]:
    """The field names of a registered config class (a pydantic dataclass or model)."""
    fields = getattr(config_cls, "__dataclass_fields__", None) or getattr(config_cls, "model_fields", {})
    return list(fields)
