"""Old names keep working: model config keys, in a model folder's config.json, a YAML file, an override or a
`create_model` call, are read as the new ones with one deprecation line; so are the old dataset and preset names
(`fair`, `fair-mlp`). The presets use the new names only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from dlforge.aliases import DATASETS, MODEL_KEYS, PRESETS
from dlforge.artifacts import MODEL_FORMAT, load_model, save_model, write_folder
from dlforge.config import list_presets, load_config
from dlforge.errors import ConfigError
from dlforge.registry import create_model, dataset_entry


def warnings_of(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]


def test_a_model_folder_with_old_config_keys_loads_with_one_warning_per_key(tmp_path, capsys):
    torch.manual_seed(0)
    model = create_model("gpt", vocab_size=17, context=8, dim=16, n_layers=2, n_heads=2).eval()
    new = save_model(model, tmp_path / "new")
    # the same folder as an older dlforge wrote it: GPT-2's n_layer and n_head in config.json, a matching manifest
    meta = json.loads((new / "config.json").read_text())
    meta["config"] = {("n_layer" if k == "n_layers" else "n_head" if k == "n_heads" else k): v
                      for k, v in meta["config"].items()}
    weights = (new / "model.safetensors").read_bytes()

    def fill(tmp: Path) -> None:
        (tmp / "model.safetensors").write_bytes(weights)
        (tmp / "config.json").write_text(json.dumps(meta))

    old = write_folder(tmp_path / "old", MODEL_FORMAT, fill)
    capsys.readouterr()
    loaded, loaded_meta = load_model(old)
    assert warnings_of(capsys) == [f"warning: {old / 'config.json'}: model.n_layer is deprecated; use model.n_layers",
                                   f"warning: {old / 'config.json'}: model.n_head is deprecated; use model.n_heads"]
    assert loaded.config == model.config
    assert {"n_layers", "n_heads"} <= set(loaded_meta["config"]) and "n_layer" not in loaded_meta["config"]
    batch = model.example_batch(2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(loaded(batch).logits, model(batch).logits, rtol=0, atol=0)


def test_an_old_key_in_an_override_is_read_as_the_new_one_with_a_warning(capsys):
    cfg = load_config("gpt-shakespeare-char", ["model.n_layer=2"])
    assert cfg.model["n_layers"] == 2 and "n_layer" not in cfg.model
    assert warnings_of(capsys) == ["warning: model.n_layer is deprecated; use model.n_layers"]
    assert cfg.hash() == load_config("gpt-shakespeare-char", ["model.n_layers=2"]).hash()


def test_old_keys_in_a_users_yaml_are_read_as_the_new_ones(tmp_path, capsys):
    path = tmp_path / "old.yaml"
    path.write_text("data: {name: co2}\nmodel: {name: lstm_forecaster, hidden_size: 16, num_layers: 1}\n"
                    "train: {max_steps: 1}\n")
    cfg = load_config(path)
    assert cfg.model == {"name": "lstm_forecaster", "dim": 16, "n_layers": 1}
    assert warnings_of(capsys) == ["warning: model.hidden_size is deprecated; use model.dim",
                                   "warning: model.num_layers is deprecated; use model.n_layers"]
    saved = yaml.safe_load(yaml.safe_dump(cfg.model_dump(mode="json")))  # the run's config.yaml: the new names
    assert "hidden_size" not in saved["model"] and saved["model"]["dim"] == 16


@pytest.mark.parametrize(("name", "old", "new"), [("bert_mlm", "max_len", "context"),
                                                  ("transformer_seq2seq", "max_len", "context"),
                                                  ("char_gru", "num_layers", "n_layers")])
def test_create_model_reads_an_old_key_as_the_new_one(name, old, new, capsys):
    model = create_model(name, **{old: 3})
    assert getattr(model.config, new) == 3
    assert warnings_of(capsys) == [f"warning: model.{old} is deprecated; use model.{new}"]


def test_an_old_key_beside_its_new_one_in_one_section_is_refused(tmp_path):
    path = tmp_path / "both.yaml"
    path.write_text("data: {name: co2}\nmodel: {name: gru_forecaster, n_layers: 1, num_layers: 2}\n"
                    "train: {max_steps: 1}\n")
    with pytest.raises(ConfigError, match=r"^model\.num_layers: the old name of model\.n_layers, which is given too"):
        load_config(path)


def test_overrides_of_an_old_and_a_new_key_apply_in_order(capsys):
    assert load_config("gpt-shakespeare-char", ["model.n_head=2", "model.n_heads=8"]).model["n_heads"] == 8
    assert load_config("gpt-shakespeare-char", ["model.n_heads=8", "model.n_head=2"]).model["n_heads"] == 2


def test_an_old_key_a_model_never_had_stays_an_unknown_key():
    with pytest.raises(ConfigError, match=r"^model\.hidden_size: unknown key"):
        load_config("breast-cancer-mlp", ["model.hidden_size=8"])  # the MLP has neither hidden_size nor dim


def test_the_fair_dataset_is_affairs_under_its_old_name(capsys):
    cfg = load_config("affairs-mlp", ["data.name=fair"])
    assert cfg.data["name"] == "affairs" and cfg.data_config().name == "affairs"
    assert warnings_of(capsys) == ["warning: dataset 'fair' is deprecated; use 'affairs'"]
    assert dataset_entry("fair") is dataset_entry("affairs")


def test_the_fair_mlp_preset_is_affairs_mlp_under_its_old_name(capsys):
    cfg = load_config("fair-mlp")
    assert cfg.name == "affairs-mlp" and cfg == load_config("affairs-mlp")
    assert warnings_of(capsys) == ["warning: preset 'fair-mlp' is deprecated; use 'affairs-mlp'"]


@pytest.mark.parametrize("preset", sorted(list_presets()))
def test_presets_use_the_new_names(preset):
    raw = yaml.safe_load(list_presets()[preset].read_text())
    assert preset not in PRESETS and raw["data"]["name"] not in DATASETS, f"{preset}: an old name"
    assert not set(raw["model"]) & set(MODEL_KEYS), f"{preset}: old model keys"
