"""The config: presets, YAML files, dotted overrides, validation errors a person can read, the schema, the hash."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from dlforge.config import (
    Config,
    TrainConfig,
    apply_overrides,
    dump_config,
    json_schema,
    list_presets,
    load_config,
    read_yaml,
    validate_config,
)
from dlforge.errors import ConfigError
from dlforge.registry import dataset_entry, list_datasets, list_models, model_entry

PRESETS = sorted(list_presets())
PRESET = "iris-logistic" if "iris-logistic" in PRESETS else PRESETS[0]


def minimal(**train) -> dict:
    """A small valid config dict; `train` keys replace the defaults."""
    return {
        "name": "tiny",
        "data": {"name": "iris", "val_fraction": 0.2, "test_fraction": 0.2},
        "model": {"name": "mlp", "hidden": [8]},
        "train": {"max_steps": 5, "batch_size": 16, "lr": 0.01, **train},
    }


def config_error(preset, overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(preset, overrides)
    message = str(info.value)
    assert "\n" not in message, f"not one line: {message!r}"
    return message


# --- loading ---------------------------------------------------------------------------------------------------


def test_preset_loads_by_name_with_the_values_of_its_yaml():
    raw = read_yaml(list_presets()[PRESET])
    cfg = load_config(PRESET)
    assert isinstance(cfg, Config)
    assert cfg.name == PRESET  # the preset's name when the YAML names no run
    assert cfg.data["name"] == raw["data"]["name"] and cfg.model["name"] == raw["model"]["name"]
    for key, value in raw["train"].items():
        assert getattr(cfg.train, key) == value, key
    for key, value in raw["data"].items():
        assert cfg.data[key] == value, key


def test_yaml_path_loads_and_its_stem_is_the_default_name(tmp_path):
    raw = minimal()
    del raw["name"]
    path = tmp_path / "my-experiment.yaml"
    path.write_text(yaml.safe_dump(raw))
    for ref in (path, str(path)):
        cfg = load_config(ref)
        assert cfg.name == "my-experiment"
        assert cfg.model == raw["model"]
        assert cfg.train.max_steps == raw["train"]["max_steps"] and cfg.train.lr == raw["train"]["lr"]
        assert cfg.data["val_fraction"] == raw["data"]["val_fraction"]


def test_a_dict_loads_and_defaults_fill_the_rest():
    cfg = load_config(minimal())
    assert cfg.train.optimizer == TrainConfig.model_fields["optimizer"].default
    assert cfg.data["split_seed"] == dataset_entry("iris").config_cls.model_fields["split_seed"].default


@pytest.mark.parametrize(
    ("override", "section", "key", "expected"),
    [
        ("train.lr=3e-3", "train", "lr", 0.003),
        ("train.lr=0.5", "train", "lr", 0.5),
        ("model.hidden=[256,256]", "model", "hidden", [256, 256]),
        ("model.hidden=[]", "model", "hidden", []),
        ("train.batch_size=full", "train", "batch_size", "full"),
        ("train.batch_size=7", "train", "batch_size", 7),
        ("train.grad_clip=null", "train", "grad_clip", None),
        ("train.nesterov=true", "train", "nesterov", True),
        ("train.milestones=[10, 20]", "train", "milestones", [10, 20]),
    ],
)
def test_overrides_are_read_as_yaml(override, section, key, expected):
    cfg = load_config(minimal(grad_clip=1.0), [override])
    value = getattr(cfg.train, key) if section == "train" else cfg.model[key]
    assert value == expected
    assert type(value) is type(expected)


def test_overrides_reach_nested_sections_and_later_ones_win():
    cfg = load_config(minimal(), ["train.early_stopping.patience=3", "train.lr=0.1", "train.lr=0.2", "name=other"])
    assert cfg.train.early_stopping is not None and cfg.train.early_stopping.patience == 3
    assert cfg.train.lr == 0.2
    assert cfg.name == "other"


def test_apply_overrides_builds_missing_levels_and_refuses_a_bare_word():
    raw: dict = {}
    apply_overrides(raw, ["a.b.c=1", "a.d=[1, 2]", "e=text"])
    assert raw == {"a": {"b": {"c": 1}, "d": [1, 2]}, "e": "text"}
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["train.lr"])


def test_loading_a_dict_with_overrides_leaves_the_callers_dict_alone():
    base = minimal()
    before = copy.deepcopy(base)
    load_config(base, ["train.lr=0.5", "train.early_stopping.patience=3", "model.hidden=[4]"])
    assert base == before


@pytest.mark.parametrize("preset", PRESETS)
def test_resolved_config_round_trips_through_yaml(tmp_path, preset):
    from dlforge.registry import config_fields, model_entry

    model = load_config(preset).model["name"]
    dropout = ["model.dropout=0.2"] if "dropout" in config_fields(model_entry(model).config_cls) else []
    cfg = load_config(preset, ["train.lr=3e-3", *dropout, "train.batch_size=full", "name=rt"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(cfg))
    again = load_config(path)
    assert again == cfg
    assert again.model_dump(mode="json") == cfg.model_dump(mode="json")
    assert again.hash() == cfg.hash()


# --- errors: unknown keys, wrong types, out of range ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "key", "suggestion"),
    [
        ("train.lrr=0.1", "train.lrr", "train.lr"),
        ("model.hiden=[64]", "model.hiden", "model.hidden"),
        ("data.targt=label", "data.targt", "data.target"),
        ("trian.lr=0.1", "trian", "train"),
        ("train.early_stopping.patiense=3", "train.early_stopping.patiense", "train.early_stopping.patience"),
    ],
)
def test_unknown_key_is_named_with_a_suggestion(override, key, suggestion):
    message = config_error(PRESET, [override])
    assert message.startswith(f"{key}: unknown key"), message
    assert f"did you mean {suggestion!r}" in message


def test_unknown_key_far_from_any_gives_no_wrong_suggestion():
    message = config_error(PRESET, ["train.zzzzqqq=1"])
    assert message.startswith("train.zzzzqqq: unknown key")
    assert "did you mean" not in message


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("train.lr=abc", "train.lr", "number"),
        ("train.max_steps=1.5", "train.max_steps", "integer"),
        ("model.hidden=abc", "model.hidden", "list"),
        ("model.hidden=[8, x]", "model.hidden", "integer"),
        ("train.optimizer=adamm", "train.optimizer", "adamw"),
        ("train.device=gpu", "train.device", "cuda"),
    ],
)
def test_wrong_type_names_the_key_and_what_was_expected(override, key, expected):
    message = config_error(PRESET, [override])
    assert message.startswith(key), message
    assert expected in message
    assert "got" in message  # and what was given


@pytest.mark.parametrize(
    ("bad", "good"),
    [
        ("train.lr=-1", "train.lr=1e-9"),
        ("train.lr=0", "train.lr=1e-9"),
        ("model.dropout=1.5", "model.dropout=0.99"),
        ("model.dropout=-0.1", "model.dropout=0"),
        ("train.grad_accum=0", "train.grad_accum=1"),
        ("data.val_fraction=0.7", "data.val_fraction=0.3"),
        ("train.max_steps=0", "train.max_steps=1"),
        ("train.batch_size=0", "train.batch_size=1"),
        ("model.hidden=[0]", "model.hidden=[1]"),
    ],
)
def test_out_of_range_names_the_key_and_the_limit_is_where_it_should_be(bad, good):
    key = bad.partition("=")[0]
    message = config_error(PRESET, [bad])
    assert message.startswith(f"{key}:"), message
    assert bad.partition("=")[2].strip("[]") in message  # the value that was given
    load_config(PRESET, [good])  # just inside the range: accepted


def test_val_plus_test_fraction_too_large_is_named():
    message = config_error(PRESET, ["data.val_fraction=0.45", "data.test_fraction=0.45"])
    assert "data.test_fraction" in message and "val_fraction" in message


@pytest.mark.parametrize(
    ("override", "key", "suggestion"),
    [("model.name=mlpp", "model.name", "mlp"), ("data.name=iriss", "data.name", "iris")],
)
def test_unknown_model_or_dataset_name_suggests_a_registered_one(override, key, suggestion):
    assert suggestion in (list_models() if key == "model.name" else list_datasets())
    message = config_error(PRESET, [override])
    assert message.startswith(f"{key}:"), message
    assert override.partition("=")[2] in message and f"did you mean {suggestion!r}" in message


def test_unknown_preset_suggests_the_closest():
    typo = PRESET[:-2] + PRESET[-1]  # one letter dropped
    message = config_error(typo, [])
    assert typo in message and f"did you mean {PRESET!r}" in message


def test_missing_yaml_file_is_named(tmp_path):
    path = tmp_path / "nowhere.yaml"
    message = config_error(path, [])
    assert str(path) in message and "not found" in message


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    lines = ["data:", "  name: iris", "model:", "  name: mlp", "train:", "  max_steps: 5", "  lr: 0.1: 2", "  x: 1"]
    bad_line = 7  # "lr: 0.1: 2" (a second colon in a plain value)
    path = tmp_path / "broken.yaml"
    path.write_text("\n".join(lines) + "\n")
    message = config_error(path, [])
    assert f"{path}:{bad_line}:" in message


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
def test_yaml_that_is_not_a_mapping_is_named(tmp_path, text):
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    message = config_error(path, [])
    assert str(path) in message and "mapping" in message


def test_no_stop_condition_names_train_max_steps():
    raw = minimal()
    del raw["train"]["max_steps"]
    with pytest.raises(ConfigError, match=r"train\.max_steps"):
        validate_config(raw)
    validate_config({**raw, "train": {**raw["train"], "max_epochs": 1}})  # either one will do


@pytest.mark.parametrize("section", ["data", "model", "train"])
def test_missing_section_is_named(section):
    raw = minimal()
    del raw[section]
    with pytest.raises(ConfigError, match=rf"^{section}: missing"):
        validate_config(raw)


@pytest.mark.parametrize("section", ["data", "model"])
def test_section_without_a_name_is_named(section):
    raw = minimal()
    del raw[section]["name"]
    with pytest.raises(ConfigError, match=rf"^{section}\.name: missing"):
        validate_config(raw)


# --- presets -----------------------------------------------------------------------------------------------------


def test_presets_are_found_in_the_package_configs_folder():
    package_configs = Path(__file__).resolve().parents[1] / "dlforge" / "configs"
    assert set(PRESETS) == {p.stem for p in package_configs.glob("*.yaml")}


def test_configs_in_the_working_directory_add_and_replace_presets(tmp_path, monkeypatch):
    local = tmp_path / "configs"
    local.mkdir()
    (local / "mine.yaml").write_text(yaml.safe_dump(minimal()))
    (local / f"{PRESET}.yaml").write_text(yaml.safe_dump(minimal(lr=0.123)))
    monkeypatch.chdir(tmp_path)
    presets = list_presets()
    assert set(presets) == set(PRESETS) | {"mine"}
    assert Path(presets[PRESET]).resolve() == (local / f"{PRESET}.yaml").resolve()
    assert load_config("mine").name == "tiny"
    assert load_config(PRESET).train.lr == 0.123


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_validates(preset):
    cfg = load_config(preset)
    assert cfg.name == preset
    assert cfg.data["name"] in list_datasets() and cfg.model["name"] in list_models()
    assert cfg.train.max_steps is not None or cfg.train.max_epochs is not None
    assert validate_config(read_yaml(list_presets()[preset]) | {"name": preset}) == cfg


# --- JSON schema -----------------------------------------------------------------------------------------------

JSON_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}


def _walk(node, path="#"):
    """Every (path, sub-schema dict) in a schema."""
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}/{i}")


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        target = schema
        for part in ref[2:].split("/"):
            target = target[part]
        node = target
    return node


def test_json_schema_is_well_formed_json_schema():
    schema = json_schema()
    assert json.loads(json.dumps(schema)) == schema  # plain JSON
    assert schema["type"] == "object"
    assert {"data", "model", "train"} <= set(schema["required"])
    for path, node in _walk(schema):
        if "$ref" in node:
            _resolve(schema, node)  # every reference resolves inside the document
        types = node.get("type")
        if isinstance(types, str) and not path.endswith("/properties"):
            assert types in JSON_TYPES, (path, types)
        for word in ("anyOf", "oneOf", "allOf"):
            if word in node and not path.endswith("/properties"):
                assert isinstance(node[word], list) and node[word], (path, word)
        if "required" in node and not path.endswith("/properties"):
            assert set(node["required"]) <= set(node.get("properties", {})), path


def test_json_schema_has_one_variant_per_registered_model_and_dataset():
    schema = json_schema()
    props = schema["properties"]
    for section, names in (("model", list_models()), ("data", list_datasets())):
        variants = props[section]["oneOf"]
        consts = [v["properties"]["name"]["const"] for v in variants]
        assert sorted(consts) == names
        assert all(v["required"] == ["name"] for v in variants)
    mlp = next(v for v in props["model"]["oneOf"] if v["properties"]["name"]["const"] == "mlp")
    assert set(mlp["properties"]) - {"name"} == set(model_entry("mlp").config_cls.__dataclass_fields__)


def test_json_schema_train_section_lists_every_train_field():
    schema = json_schema()
    train = _resolve(schema, schema["properties"]["train"])
    assert set(train["properties"]) == set(TrainConfig.model_fields)
    assert train.get("additionalProperties") is False
    batch = train["properties"]["batch_size"]
    options = batch.get("anyOf", [batch])
    assert any(o.get("type") == "integer" for o in options) and any(o.get("const") == "full" for o in options)
    assert _resolve(schema, train["properties"]["max_steps"]) is not None


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_fits_the_json_schema(preset):
    # jsonschema is not a dependency: check keys and enumerations against the schema by hand
    schema = json_schema()
    raw = read_yaml(list_presets()[preset])
    train = _resolve(schema, schema["properties"]["train"])
    for key, value in raw["train"].items():
        assert key in train["properties"], key
        prop = _resolve(schema, train["properties"][key])
        options = [_resolve(schema, o) for o in prop.get("anyOf", [prop])]
        enums = [v for o in options for v in o.get("enum", [o["const"]] if "const" in o else [])]
        if enums and all("enum" in o or "const" in o for o in options):
            assert value in enums, (key, value)
        if isinstance(value, dict):  # a nested section, e.g. early_stopping
            nested = next(o for o in options if "properties" in o)
            assert set(value) <= set(nested["properties"]), key
    for section in ("data", "model"):
        variant = next(v for v in schema["properties"][section]["oneOf"]
                       if v["properties"]["name"]["const"] == raw[section]["name"])
        assert set(raw[section]) <= set(variant["properties"]), section


# --- the hash ----------------------------------------------------------------------------------------------------


def test_hash_is_stable_for_equal_configs():
    a = load_config(PRESET, ["train.lr=0.01"])
    b = load_config(PRESET, ["train.lr=1e-2"])
    assert a == b and a.hash() == b.hash()
    reordered = {k: dict(reversed(v.items())) if isinstance(v, dict) else v
                 for k, v in reversed(list(a.model_dump(mode="json").items()))}
    assert validate_config(reordered).hash() == a.hash()


@pytest.mark.parametrize(
    "override",
    ["train.lr=0.02", "train.seed=1", "model.hidden=[9]", "data.split_seed=3", "name=x", "train.max_steps=6"],
)
def test_hash_changes_when_a_value_changes(override):
    base = load_config(minimal())
    changed = load_config(minimal(), [override])
    assert changed != base
    assert changed.hash() != base.hash()


@pytest.mark.parametrize(("override", "expected"), [
    ("train.batch_size=fulll", "train.batch_size: expected an integer or 'full', got 'fulll'"),
    ("train.eval_every=often", "train.eval_every: expected an integer or 'epoch', got 'often'"),
])
def test_union_fields_name_every_accepted_form(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config("breast-cancer-mlp", [override])
    assert str(err.value) == expected


def test_hash_is_the_same_whether_a_default_is_written_out_or_not():
    assert load_config("breast-cancer-mlp", ["model.norm=none"]).hash() == load_config("breast-cancer-mlp").hash()
    assert load_config("breast-cancer-mlp", ["model.norm=layernorm"]).hash() != load_config("breast-cancer-mlp").hash()


# --- true/false is not a number (issue 13, defect 22) ------------------------------------------------------------


def _number_kind(annotation) -> str | None:
    """'an integer' or 'a number' for a field that takes numbers but not true/false; None for any other field."""
    import types
    import typing

    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    kinds = set(args or (annotation,))
    if bool in kinds:
        return None
    return "a number" if float in kinds else "an integer" if int in kinds else None


def _number_keys() -> list[tuple[str, str]]:
    """(dotted key, expected) for every int/float field of the train section, its sub-sections and DataConfig."""
    from dlforge.config import DataConfig, EarlyStopping, LoRAConfig, TransferConfig

    sections = [("train", TrainConfig), ("train.early_stopping", EarlyStopping), ("train.transfer", TransferConfig),
                ("train.lora", LoRAConfig), ("data", DataConfig)]
    return [(f"{prefix}.{name}", kind) for prefix, cls in sections for name, field in cls.model_fields.items()
            if (kind := _number_kind(field.annotation))]


NEEDS = {"train.transfer": ["train.transfer.init_from=x"], "train.lora": ["train.init_from=x"]}


@pytest.mark.parametrize(("key", "expected"), _number_keys())
def test_true_or_false_is_refused_for_every_number_field(key, expected):
    assert len(_number_keys()) >= 25  # every int/float field of the schema is covered, not a chosen few
    needed = NEEDS.get(key.rpartition(".")[0], [])
    for word in ("true", "false"):
        message = config_error(minimal(), [*needed, f"{key}={word}"])
        assert message == f"{key}: expected {expected}, got {word.title()}"


@pytest.mark.parametrize(("override", "expected"), [
    ("train.max_epochs=true", "train.max_epochs: expected an integer, got True"),  # was read as 1 epoch
    ("train.batch_size=true", "train.batch_size: expected an integer, got True"),
    ("train.milestones=[10, true]", "train.milestones: expected an integer, got [10, True]"),
    ("train.betas=[0.9, false]", "train.betas: expected a number, got [0.9, False]"),
    ("data.val_fraction=true", "data.val_fraction: expected a number, got True"),
    ("model.dropout=true", "model.dropout: expected a number, got True"),
    ("model.hidden=[8, true]", "model.hidden: expected an integer, got [8, True]"),
])
def test_true_or_false_in_a_number_field_names_the_key_and_the_type(override, expected):
    assert config_error(minimal(), [override]) == expected


def test_true_and_false_stay_booleans_where_a_field_takes_them():
    cfg = load_config(minimal(), ["train.nesterov=true", "train.progress=false", "model.bias=false"])
    assert (cfg.train.nesterov, cfg.train.progress, cfg.model["bias"]) == (True, False, False)
    assert load_config(minimal(), ["train.max_steps=1e3"]).train.max_steps == 1000  # a whole float stays fine
