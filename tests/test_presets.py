"""Every preset in dlforge/configs/ runs end to end on its real data: a smoke run of two steps on the first 64 samples
of each split (`data.limit`), with the run folder a user would get (model, eval.json, plots)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from dlforge import api
from dlforge.config import list_presets, load_config

CONFIGS = Path(__file__).resolve().parent.parent / "dlforge" / "configs"
PRESETS = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
# A preset that starts from another run (transfer, init_from) or takes its tokenizer needs that run first: the
# source preset's smoke run, made once per session and copied into the runs folder of each preset that needs it.
NEEDS = {"fashion-transfer1pct": "fashion-pretrain5", "genre-bert-small": "bert-shakespeare-mlm",
         "gpt-bible-adapt": "gpt-shakespeare-bpe", "gpt-bible-scratch": "gpt-shakespeare-bpe",
         "gpt-shakespeare-sft": "gpt-shakespeare-bpe", "gpt-shakespeare-sft-lora": "gpt-shakespeare-bpe"}
# A GPU preset's smoke run on a CPU: the same recipe at a toy size, in fp32, uncompiled.
SHRINK = {"gpt2-124m": ["model.n_layers=1", "model.n_heads=2", "model.dim=32", "model.context=32", "data.context=32",
                        "train.precision=fp32", "train.compile=false"],
          "fashion-ddpm": ["model.sampling.steps=2"]}  # the report's 64 samples in 2 steps, not 50
SMOKE = ["train.max_steps=2", "train.max_epochs=null", "train.warmup_steps=0", "train.progress=false",
         "train.tensorboard=false", "train.eval_every=1", "train.checkpoint_every=1", "data.limit=64"]


def smoke(preset: str, runs_dir: Path) -> api.RunResult:
    overrides = [*SMOKE, f"runs_dir={runs_dir}", *SHRINK.get(preset, [])]
    cfg = load_config(preset, overrides)
    if cfg.train.scheduler == "multistep":
        cfg = load_config(preset, [*overrides, "train.milestones=[1]"])
    return api.train(cfg)


def test_presets_are_listed():
    assert set(PRESETS) <= set(list_presets())
    assert {"fashion-resnet", "fashion-simplecnn", "fashion-mlp", "digits-cnn", "co2-lstm", "co2-gru",
            "shakespeare-char-lstm", "fashion-transfer1pct", "fashion-scratch1pct", "gpt-shakespeare-char",
            "gpt-shakespeare-bpe", "gpt2-124m", "gpt-bible-adapt", "gpt-bible-scratch", "gpt-shakespeare-sft",
            "gpt-shakespeare-sft-lora"} <= set(PRESETS)


@pytest.fixture(scope="session")
def source_runs(tmp_path_factory):
    """`source_runs(preset)`: the folder of that preset's smoke run, made on first use in a folder of its own."""
    made: dict[str, Path] = {}

    def get(preset: str) -> Path:
        if preset not in made:
            made[preset] = smoke(preset, tmp_path_factory.mktemp(f"source-{preset}") / "runs").run_dir
        return made[preset]

    return get


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_smoke_run(preset, tmp_path, monkeypatch, source_runs):
    monkeypatch.chdir(tmp_path)  # a data section naming a run ('latest:NAME', e.g. a tokenizer) looks in ./runs
    runs = tmp_path / "runs"
    if preset in NEEDS:
        source = source_runs(NEEDS[preset])
        shutil.copytree(source, runs / source.name)
    result = smoke(preset, runs)
    assert result.status == "completed" and result.steps == 2
    run = result.run_dir
    assert (run / "model" / "model.safetensors").is_file()
    ev = json.loads((run / "eval.json").read_text())
    task = json.loads((run / "model" / "data_info.json").read_text())["task"]
    assert ev["test"]["loss"] == ev["test"]["loss"]  # not NaN
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["name"] == load_config(preset).name
    plots = {p.name for p in (run / "plots").glob("*.png")}
    if task == "classification":
        assert {"confusion.png"} <= plots and "test_per_class" in ev
    if task == "segmentation":
        assert {"segmentation.png", "confusion.png"} <= plots and "test_per_class" in ev and "miou" in ev["test"]
    if task == "forecast":
        assert "forecast.png" in plots and {"mase", "naive_mase", "rel_mae"} <= set(ev["test"])
    if task in ("language_modeling", "masked_lm"):
        assert {"perplexity", "bits_per_token"} <= set(ev["test"])  # bits per character: not for masked-LM
    model = api.load(run)
    assert model.registry_name == saved["model"]["name"]
