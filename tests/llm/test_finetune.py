"""Continued pretraining: train.init_from (every weight, the source's tokenizer), and language models measured on
corpora (`dlforge lm perplexity`)."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from dlforge import api
from dlforge.artifacts import load_model
from dlforge.config import load_config
from dlforge.errors import CheckpointError, ConfigError
from dlforge.llm.generate import load_language_model
from dlforge.llm.perplexity import corpus_perplexity
from tests.clitools import ok_json, run_here
from tests.lmtools import tiny_lm_config, write_corpus


def continued(tiny_lm_run, tmp_path, **data) -> dict:
    """Continue pretraining the tiny base on another corpus, with its tokenizer."""
    cfg = tiny_lm_config(tmp_path, write_corpus(tmp_path / "other", seed=1), init_from=str(tiny_lm_run.run))
    cfg["name"] = "tiny-continued"
    cfg["data"]["tokenizer"] = str(tiny_lm_run.run)
    cfg["data"].update(data)
    return cfg


def test_init_from_loads_every_weight(tiny_lm_run, tmp_path):
    cfg = load_config(continued(tiny_lm_run, tmp_path))
    data = api.build_data(cfg)
    model = api.build_model(cfg, data)
    folder = api.init_from(model, str(tiny_lm_run.run), tokenizer=data.tokenizer)
    source, _ = load_model(folder)
    assert folder == tiny_lm_run.run / "model"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), source.state_dict().values(),
                                                 strict=True))


def test_continued_pretraining_run_starts_where_the_source_ended(tiny_lm_run, tmp_path, capfd):
    cfg = continued(tiny_lm_run, tmp_path)
    cfg["train"].update(max_steps=2, lr=1e-9, warmup_steps=0, eval_every=2)  # too small a step to move anything
    result = api.train(cfg)
    # what it started from, resolved, is recorded, printed and in the model card (issue 13, defect 7)
    weights = tiny_lm_run.run / "model" / "model.safetensors"
    record = {"key": "train.init_from", "ref": str(tiny_lm_run.run), "path": str((tiny_lm_run.run / "model").resolve()),
              "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    assert json.loads((result.run_dir / "run.json").read_text())["started_from"] == record
    assert f"train.init_from {record['ref']}: {record['path']} (weights SHA-256 {record['weights_sha256']})" in (
        capfd.readouterr().err.splitlines())
    card = (result.run_dir / "README.md").read_text()
    assert f"- Started from: `{record['path']}` (train.init_from: `{record['ref']}`, weights SHA-256 " \
           f"`{record['weights_sha256']}`)" in card
    model, tok = load_language_model(result.run_dir)
    base, base_tok = load_language_model(tiny_lm_run.run)
    assert tok.hash == base_tok.hash
    other = write_corpus(tmp_path / "other", seed=1)
    ours = corpus_perplexity(model, tok, str(other), "val")["perplexity"]
    assert ours == pytest.approx(corpus_perplexity(base, base_tok, str(other), "val")["perplexity"], rel=1e-4)
    assert ours == pytest.approx(result.metrics["val"]["perplexity"], rel=1e-6)  # the run's own val windows


def test_init_from_refuses_another_tokenizer_or_shape_before_making_a_run(tiny_lm_run, tmp_path):
    with pytest.raises(CheckpointError, match=rf"train.init_from {tiny_lm_run.run}: tokenizer hash .* differs"):
        api.train(continued(tiny_lm_run, tmp_path, tokenizer="bpe:300"))  # a tokenizer trained on the new corpus
    cfg = continued(tiny_lm_run, tmp_path)
    cfg["model"]["dim"] = 48
    with pytest.raises(ConfigError, match=r"train.init_from .*: tensor 'tok_emb.weight' is \(\d+, 32\) in the "
                                          r"source, \(\d+, 48\) here"):
        api.train(cfg)
    cfg = continued(tiny_lm_run, tmp_path)
    cfg["train"]["init_from"] = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="train.init_from: .*nowhere"):
        api.train(cfg)
    assert not (tmp_path / "runs").exists()  # nothing written


def test_init_from_and_lora_config_rules(tiny_lm_run, tmp_path):
    cfg = continued(tiny_lm_run, tmp_path)
    cfg["train"]["transfer"] = {"init_from": str(tiny_lm_run.run)}
    with pytest.raises(ConfigError, match="train.init_from: give either train.init_from .* or train.transfer"):
        load_config(cfg)
    cfg = continued(tiny_lm_run, tmp_path)
    del cfg["train"]["init_from"]
    cfg["train"]["lora"] = {"rank": 4}
    with pytest.raises(ConfigError, match="train.lora: needs train.init_from"):
        load_config(cfg)


def test_perplexity_command_measures_each_model_on_each_corpus(tiny_lm_run, tmp_path, capsys):
    other = write_corpus(tmp_path / "other", seed=1)
    out = ok_json(run_here(capsys, "lm", "perplexity", str(tiny_lm_run.run), "--corpus", str(tiny_lm_run.corpus),
                           "--corpus", str(other), "--split", "test", "--json"))
    ev = json.loads((tiny_lm_run.run / "eval.json").read_text())
    own, new = out["results"]
    assert (own["corpus"], new["corpus"], own["split"]) == (str(tiny_lm_run.corpus), str(other), "test")
    assert own["perplexity"] == pytest.approx(ev["test"]["perplexity"], rel=1e-6)  # the run's own test windows
    assert own["bits_per_char"] == pytest.approx(ev["test"]["bits_per_char"], rel=1e-6)
    assert own["context"] == 16 and own["windows"] == (own["tokens"] - 1) // 16
    assert new["perplexity"] > 1 and new["tokens"] > 0
