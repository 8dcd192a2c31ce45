"""The GPT model: causality, padding, its config's checks, GPT-2 initialization, FLOPs per token against torch's flop
counter, activation checkpointing, and a short training run through the Trainer that logs tokens/s and MFU."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from dlforge.config import load_config
from dlforge.data.dataset import TensorDictDataset
from dlforge.errors import ConfigError
from dlforge.registry import create_model
from dlforge.train.callbacks import FlopsUtilization
from dlforge.train.trainer import Trainer

SMALL = {"vocab_size": 23, "dim": 32, "n_layers": 2, "n_heads": 4, "context": 16}
VARIANTS = [{}, {"positions": "rotary"}, {"norm": "rmsnorm", "ffn": "swiglu", "bias": False},
            {"tie_weights": False, "act": "gelu"}]


def small_gpt(seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("gpt", **{**SMALL, **overrides}).eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_token_sees_only_the_tokens_before_it(variant):
    model = small_gpt(**variant)
    ids = torch.randint(0, 23, (2, 12), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 23
    with torch.no_grad():
        a, b = model({"input_ids": ids}).logits, model({"input_ids": changed}).logits
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


@pytest.mark.parametrize("variant", VARIANTS[:2])
def test_padding_on_either_side_leaves_the_real_tokens_alone(variant):
    model = small_gpt(**variant)
    ids = torch.randint(1, 23, (1, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        alone = model({"input_ids": ids}).logits[0]
        pad = torch.zeros(1, 4, dtype=torch.long)
        left = model({"input_ids": torch.cat([pad, ids], 1),
                      "attention_mask": torch.cat([torch.zeros(1, 4), torch.ones(1, 9)], 1).long()}).logits[0, 4:]
        right = model({"input_ids": torch.cat([ids, pad], 1),
                       "attention_mask": torch.cat([torch.ones(1, 9), torch.zeros(1, 4)], 1).long()}).logits[0, :9]
    torch.testing.assert_close(left, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=1e-5)


def test_loss_is_next_token_cross_entropy_with_ignored_labels():
    model = small_gpt()
    ids = torch.randint(0, 23, (3, 10), generator=torch.Generator().manual_seed(2))
    labels = torch.randint(0, 23, (3, 10), generator=torch.Generator().manual_seed(3))
    labels[0, :4] = -100
    out = model({"input_ids": ids, "labels": labels})
    keep = labels != -100
    expected = torch.nn.functional.cross_entropy(out.logits[keep], labels[keep])  # no shift: labels are next tokens
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"dim": 30, "n_heads": 4}, r"model\.n_heads: must divide dim \(30\)"),
    ({"dim": 12, "n_heads": 4, "positions": "rotary"}, r"model\.positions: rotary needs an even head size"),
    ({"act": "gleu"}, r"model\.act: expected one of"),
    ({"contex": 8}, r"model\.contex: unknown key; did you mean 'model\.context'\?"),
])
def test_bad_config_names_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        create_model("gpt", **overrides)


def test_a_batch_longer_than_the_context_is_refused():
    model = small_gpt()
    with pytest.raises(ValueError, match="17 tokens exceed the model's context window of 16"):
        model({"input_ids": torch.zeros(1, 17, dtype=torch.long)})


def test_gpt2_initialization_and_weight_tying():
    torch.manual_seed(0)
    model = create_model("gpt", vocab_size=500, dim=256, n_layers=8, n_heads=4, context=64)
    assert model.head.weight is model.tok_emb.weight
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert model.blocks[3].ffn.proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.02)
    assert model.blocks[3].attn.proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.03)
    assert not model.blocks[0].attn.qkv.bias.any()
    untied = create_model("gpt", **SMALL, tie_weights=False)
    assert untied.head.weight is not untied.tok_emb.weight


@pytest.mark.parametrize("variant", [{}, {"tie_weights": False}, {"ffn": "swiglu", "bias": False}])
def test_flops_per_token_matches_torch_flop_counter(variant):
    """6 N + 12 L T C against the matmul FLOPs torch counts in one forward and backward, attention through SDPA's
    math kernel (whose matmuls the counter sees). Biases and norm gains are in N but are not matmuls: 2% of slack."""
    model = small_gpt(**{**variant, "dim": 64, "vocab_size": 200}).train()
    ids = torch.randint(0, 200, (2, 16))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model({"input_ids": ids, "labels": ids}).loss.backward()
    measured = counter.get_total_flops() / ids.numel()
    assert model.flops_per_token(16) == pytest.approx(measured, rel=0.02)


def test_activation_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model = small_gpt(seed=4).train()
        model.activation_checkpointing = checkpointing
        ids = torch.randint(0, 23, (2, 16), generator=torch.Generator().manual_seed(5))
        model({"input_ids": ids, "labels": ids}).loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_training_logs_tokens_per_second_and_mfu(train_config):
    g = torch.Generator().manual_seed(6)
    text = torch.randint(0, 23, (64, 17), generator=g)
    data = TensorDictDataset({"input_ids": text[:, :-1], "labels": text[:, 1:]})
    model = small_gpt(seed=6).train()
    logs = []

    class Keep(FlopsUtilization):
        def on_step_end(self, trainer, step_logs):
            super().on_step_end(trainer, step_logs)
            logs.append(dict(step_logs))

    Trainer(model, train_config(max_steps=4, batch_size=8), data,
            callbacks=[Keep(model.flops_per_token(16))]).fit()
    assert all(row["tokens_per_s"] == pytest.approx(row["samples_per_s"] * 16) for row in logs)
    assert all(0 < row["mfu"] < 1 for row in logs)


def test_model_context_shorter_than_the_data_windows_is_a_config_error(tmp_path):
    from dlforge import api

    cfg = load_config({"data": {"name": "shakespeare_char", "context": 32, "limit": 8},
                       "model": {"name": "gpt", "context": 16, "dim": 16, "n_heads": 2, "n_layers": 1},
                       "train": {"max_steps": 1}})
    with pytest.raises(ConfigError, match=r"model\.context: 16 tokens, fewer than the 32 of each sample"):
        api.build_model(cfg, api.build_data(cfg))


def test_mfu_needs_a_model_that_counts_its_flops(tmp_path):
    from dlforge import api

    with pytest.raises(ConfigError, match="train.mfu: model 'logistic_regression' does not report its FLOPs"):
        api.train("iris-logistic", ["train.mfu=true", f"runs_dir={tmp_path}"])
    assert not any(tmp_path.iterdir())  # refused before a run folder was made


def test_a_gpt_run_logs_tokens_per_second_and_mfu(tmp_path):
    import json

    from dlforge import api

    (tmp_path / "text.txt").write_text("To be, or not to be, that is the question.\n" * 40, encoding="utf-8")
    config = {"data": {"name": "text_files", "path": str(tmp_path / "text.txt"), "context": 16, "stride": 4},
              "model": {"name": "gpt", "context": 16, "dim": 16, "n_heads": 2, "n_layers": 1},
              "train": {"max_steps": 4, "batch_size": 8, "log_every": 2, "eval_every": 4, "mfu": True,
                        "progress": False, "tensorboard": False, "checkpoint_every": None},
              "runs_dir": str(tmp_path / "runs")}
    result = api.train(config)
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 4]  # the first step, every log_every, the last
    assert all(r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 for r in steps)
