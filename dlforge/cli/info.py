"""`dlforge models`, `dlforge datasets`, `dlforge presets`, `dlforge config schema|show|keys`."""

from __future__ import annotations

import typer

from dlforge.cli.output import emit_json, table

config_app = typer.Typer(no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]})


def register(app: typer.Typer) -> None:
    app.command("models")(models_cmd)
    app.command("datasets")(datasets_cmd)
    app.command("presets")(presets_cmd)


def _show(rows: list[dict], as_json: bool, title: str) -> None:
    if as_json:
        emit_json(rows)
    else:
        table(title, list(rows[0]) if rows else [], [list(r.values()) for r in rows], keep=("name",))


def models_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    """List the registered models."""
    from dlforge.registry import model_entries

    rows = [{"name": e.name, "config": e.config_cls.__name__, "description": e.doc} for e in model_entries()]
    _show(rows, as_json, "models")


def datasets_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    """List the registered datasets."""
    from dlforge.registry import dataset_entries

    rows = [{"name": e.name, "config": e.config_cls.__name__, "description": e.doc} for e in dataset_entries()]
    _show(rows, as_json, "datasets")


def presets_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    """List the YAML presets: those shipped with dlforge, and ./configs/*.yaml (which add or replace presets)."""
    from dlforge.config import list_presets
    from dlforge.safe_yaml import read_yaml

    rows = []
    for name, path in list_presets().items():
        raw = read_yaml(path)
        rows.append({"name": name, "data": raw.get("data", {}).get("name"), "model": raw.get("model", {}).get("name"),
                     "path": str(path)})
    _show(rows, as_json, "presets")


@config_app.command("schema")
def schema_cmd() -> None:
    """Print the JSON Schema of the config (data and model sections per registered name)."""
    from dlforge.config import json_schema

    emit_json(json_schema())


@config_app.command("show")
def show_cmd(preset: str = typer.Argument(...), overrides: list[str] = typer.Argument(None),
             as_json: bool = typer.Option(False, "--json")) -> None:
    """Print a preset resolved with overrides, validated (what each key means: `dlforge config keys`)."""
    from dlforge.config import dump_config, load_config

    cfg = load_config(preset, list(overrides or []))
    if as_json:
        emit_json(cfg.model_dump(mode="json"))
    else:
        print(dump_config(cfg), end="")


@config_app.command("keys")
def keys_cmd(section: str = typer.Argument(..., help="run, train, data or model"),
             name: str = typer.Argument(None, help="with data or model: the dataset's or the model's name"),
             as_json: bool = typer.Option(False, "--json")) -> None:
    """Every key of a config section: type, default, allowed values, description. `dlforge config keys train`,
    `dlforge config keys data csv`, `dlforge config keys model gpt` (a named model may set other defaults)."""
    from dlforge.config_keys import config_keys, value_text

    rows = config_keys(section, name)
    if as_json:
        emit_json(rows)
        return
    title = f"{section} {name}" if name else section
    cells = [[r["key"], r["type"], value_text(r["default"]), r["allowed"], r["description"]] for r in rows]
    table(title, ["key", "type", "default", "allowed", "description"], cells, keep=("key",))
