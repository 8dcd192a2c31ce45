"""LoRA: the layer, adapters saved and loaded over a fresh base, merging, what trains, wrong bases refused, parity
with peft in both directions, and a LoRA run's folders."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from torch import nn

from dlforge import api
from dlforge.artifacts import load_model
from dlforge.config import LoRAConfig, TrainConfig
from dlforge.data.dataset import TensorDictDataset
from dlforge.errors import CheckpointError, ConfigError
from dlforge.layers.lora import LoRALinear
from dlforge.llm.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    add_lora,
    base_weights_hash,
    load_adapter,
    load_with_adapter,
    lora_layers,
    merge_adapter,
    merge_lora,
    save_adapter,
)
from dlforge.registry import create_model
from dlforge.train.trainer import Trainer
from tests.clitools import ok_json, run_together

SETTINGS = LoRAConfig(rank=4, alpha=8, dropout=0.1, targets=["qkv", "proj", "fc"])


def tiny_gpt(seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("gpt", **{"vocab_size": 50, "context": 16, "dim": 32, "n_layers": 2, "n_heads": 2,
                                  **overrides})


def trained_adapter(base: nn.Module, seed: int = 1) -> nn.Module:
    """A copy of `base` with adapters whose B is not zero (as after training), in eval mode."""
    model = copy.deepcopy(base)
    add_lora(model, SETTINGS)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def logits(model: nn.Module, seed: int = 2) -> torch.Tensor:
    ids = torch.randint(0, 50, (3, 16), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model({"input_ids": ids}).logits


# --- the layer -----------------------------------------------------------------------------------------------------


def test_layer_starts_as_its_base_and_merges_into_a_plain_linear():
    torch.manual_seed(0)
    base = nn.Linear(12, 20)
    x = torch.randn(5, 12)
    layer = LoRALinear(base, rank=3, alpha=6)
    assert torch.equal(layer(x), base(x))  # B starts at zero
    nn.init.normal_(layer.lora_B.weight)
    expected = base(x) + x @ layer.lora_A.weight.T @ layer.lora_B.weight.T * 2.0  # alpha / r = 2
    assert torch.allclose(layer(x), expected, atol=1e-5)
    merged = layer.merged()
    assert type(merged) is nn.Linear and torch.allclose(merged(x), layer(x), atol=1e-5)


def test_targets_by_name_suffix_and_only_adapters_train():
    model = tiny_gpt()
    names = add_lora(model, SETTINGS)
    assert names == [f"blocks.{i}.{n}" for i in range(2) for n in ("attn.qkv", "attn.proj", "ffn.fc", "ffn.proj")]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{n}.lora_{ab}.weight" for n in names for ab in "AB"}
    assert set(model.state_dict()) >= set(tiny_gpt().state_dict())  # the base weights keep their keys


@pytest.mark.parametrize("targets, message", [
    (["head"], "'head' shares its weight with another layer"),
    (["qkvv"], "'qkvv' names no layer of GPT; its linear layers end in fc, head, proj, qkv"),
    (["norm"], "'norm' selects 'norm', a LayerNorm; LoRA adapts linear layers"),
])
def test_bad_targets_are_refused(targets, message):
    with pytest.raises(ConfigError, match=f"train.lora.targets: {message}"):
        add_lora(tiny_gpt(), LoRAConfig(targets=targets))


# --- save, load, merge ---------------------------------------------------------------------------------------------


def test_save_then_load_over_a_fresh_base_gives_identical_outputs(tmp_path):
    base = tiny_gpt()
    model = trained_adapter(base)
    save_adapter(model, tmp_path / "adapter", base="tiny")
    config = json.loads((tmp_path / "adapter" / ADAPTER_CONFIG).read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"], config["lora_dropout"]) == ("LORA", 4, 8, 0.1)
    assert config["dlforge"]["base_weights_sha256"] == base_weights_hash(base)
    fresh = tiny_gpt()  # the same base, built again
    load_adapter(fresh, tmp_path / "adapter")
    assert torch.equal(logits(fresh.eval()), logits(model))
    assert not torch.allclose(logits(base.eval()), logits(model), atol=1e-3)  # the adapter does change the outputs


def test_merge_keeps_the_outputs_and_leaves_no_adapter(tmp_path):
    model = trained_adapter(tiny_gpt())
    before = logits(model)
    assert merge_lora(model)
    assert not lora_layers(model) and not any("lora" in k for k in model.state_dict())
    assert all(type(m) is nn.Linear for n, m in model.named_modules() if n.endswith(("qkv", "proj", "fc")))
    assert (logits(model) - before).abs().max() <= 1e-5
    assert model.head.weight is model.tok_emb.weight  # still tied


def test_an_adapter_over_another_base_is_refused(tmp_path):
    save_adapter(trained_adapter(tiny_gpt(seed=0)), tmp_path / "adapter", base="tiny")
    with pytest.raises(CheckpointError, match="trained over another base model"):
        load_adapter(tiny_gpt(seed=1), tmp_path / "adapter")
    (tmp_path / "adapter" / ADAPTER_WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="adapter_model.safetensors: size mismatch"):
        load_adapter(tiny_gpt(seed=0), tmp_path / "adapter")


def test_a_training_step_changes_the_adapters_only():
    model = tiny_gpt()
    add_lora(model, SETTINGS)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 50, (8, 17), generator=g)
    data = TensorDictDataset({"input_ids": ids[:, :-1], "labels": ids[:, 1:]})
    cfg = TrainConfig(max_steps=2, batch_size=4, lr=1e-2, weight_decay=0.1, progress=False, tensorboard=False,
                      checkpoint_every=None)
    trainer = Trainer(model, cfg, data)
    groups = {g["name"]: {id(p) for p in g["params"]} for g in trainer.optimizer.param_groups}
    adapters = {id(p) for n, p in model.named_parameters() if "lora_" in n}
    assert groups == {"decay": adapters}  # frozen weights are not in the optimizer; A and B (matrices) decay
    trainer.fit()
    for key, value in model.state_dict().items():
        changed = not torch.equal(value, before[key])
        assert changed == ("lora_" in key), key  # B moved from zero, A with it; nothing else (decay included)


# --- peft ----------------------------------------------------------------------------------------------------------


def test_peft_loads_a_dlforge_adapter_with_the_same_outputs(tmp_path):
    from peft import PeftModel

    base = tiny_gpt()
    model = trained_adapter(base)
    save_adapter(model, tmp_path / "adapter", base="tiny")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Unexpected keyword arguments.*")  # the dlforge section
        peft_model = PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / "adapter")).eval()
    assert (logits(peft_model) - logits(model)).abs().max() <= 1e-6


def test_dlforge_loads_a_peft_adapter_with_the_same_outputs(tmp_path):
    from peft import LoraConfig, get_peft_model

    base = tiny_gpt()
    peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["qkv", "fc"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    peft_model.save_pretrained(str(tmp_path / "peft"))
    ours = copy.deepcopy(base)
    config = load_adapter(ours, tmp_path / "peft")  # no dlforge section: no base hash to check
    assert (config.rank, config.alpha, sorted(config.targets)) == (4, 8, ["fc", "qkv"])
    assert (logits(ours.eval()) - logits(peft_model.eval())).abs().max() <= 1e-6


# --- a LoRA run ----------------------------------------------------------------------------------------------------


def test_lora_run_keeps_the_adapter_and_the_merged_model(tiny_lm_run, tmp_path):
    cfg = {"name": "tiny-lora", "runs_dir": str(tmp_path / "runs"),
           "data": {"name": "lm_text", "corpus": str(tiny_lm_run.corpus), "tokenizer": str(tiny_lm_run.run),
                    "context": 16},
           "model": {"name": "gpt", "context": 64, "dim": 32, "n_layers": 2, "n_heads": 2},
           "train": {"init_from": str(tiny_lm_run.run), "lora": {"rank": 2, "alpha": 4, "targets": ["qkv"]},
                     "max_steps": 2, "batch_size": 4, "lr": 5e-2, "progress": False, "tensorboard": False,
                     "checkpoint_every": 1}}
    run = api.train(cfg).run_dir
    resumed = api.train(cfg, ["train.max_steps=3"], resume=run)  # the adapters go on before the checkpoint loads
    assert resumed.run_dir == run and resumed.steps == 3
    merged, meta = load_model(run / "model")  # a plain model folder: no adapter keys
    base, _ = load_model(tiny_lm_run.run / "model")
    adapter = json.loads((run / "adapter" / ADAPTER_CONFIG).read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_lm_run.run / "model")
    assert adapter["dlforge"]["base_weights_sha256"] == base_weights_hash(base)
    assert not torch.equal(merged.blocks[0].attn.qkv.weight, base.blocks[0].attn.qkv.weight)  # it trained
    assert torch.equal(merged.blocks[0].attn.proj.weight, base.blocks[0].attn.proj.weight)  # not a target
    unmerged = load_with_adapter(tiny_lm_run.run, run / "adapter")
    assert lora_layers(unmerged) and (logits(unmerged) - logits(merged)).abs().max() <= 1e-5
    again = merge_adapter(tiny_lm_run.run, run / "adapter", tmp_path / "merged")
    assert all(torch.equal(a, b) for a, b in zip(load_model(again)[0].state_dict().values(),
                                                 merged.state_dict().values(), strict=True))
    procs = run_together({  # one process for the two commands: one start of torch
        "merge": ["lm", "merge-lora", str(tiny_lm_run.run), str(run / "adapter"), "--out", str(tmp_path / "cli"),
                  "--json"],
        "over": ["lm", "merge-lora", str(run), str(run / "adapter"), "--out", str(tmp_path / "wrong")]}, cwd=tmp_path)
    out = ok_json(procs["merge"])
    assert out["rank"] == 2 and torch.equal(load_model(tmp_path / "cli")[0].blocks[1].attn.qkv.weight,
                                            merged.blocks[1].attn.qkv.weight)
    proc = procs["over"]
    assert proc.returncode == 2 and "trained over another base model" in proc.stderr  # the merged model: refused
    assert not (tmp_path / "wrong").exists()
