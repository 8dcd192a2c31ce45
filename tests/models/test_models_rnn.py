"""Recurrent models: every preset runs; parity with hand-written LSTM equations and with torch's own modules; the
char LM's stepwise generation path equals its full forward; tied weights survive a save and load."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dlforge.artifacts import load_model, save_model
from dlforge.data.dataset import TensorDictDataset
from dlforge.errors import ConfigError
from dlforge.models import char_rnn, rnn  # noqa: F401  (registers the presets)
from dlforge.registry import create_model, model_entry
from dlforge.train.trainer import Trainer

FORECASTERS = ("rnn_forecaster", "lstm_forecaster", "gru_forecaster")
CLASSIFIERS = ("rnn_classifier", "lstm_classifier", "gru_classifier")
LANGUAGE_MODELS = ("char_rnn", "char_lstm", "char_gru")
TINY = {
    **{name: {"in_features": 3, "dim": 8, "n_layers": 2, "horizon": 4, "num_targets": 2}
       for name in FORECASTERS},
    **{name: {"in_features": 3, "dim": 8, "n_layers": 2, "num_classes": 4} for name in CLASSIFIERS},
    **{name: {"vocab_size": 11, "embed_dim": 6, "dim": 8, "n_layers": 2} for name in LANGUAGE_MODELS},
}  # fmt: skip
TARGETS = {"y", "labels"}


@pytest.mark.parametrize("name", list(TINY))
def test_every_preset_runs_forward_and_backward_on_its_example_batch(name):
    torch.manual_seed(0)
    model = create_model(name, **TINY[name])
    assert model.registry_name == name and model_entry(name).doc
    assert model.config.cell == name.removeprefix("char_").split("_")[0]
    batch = model.example_batch(batch_size=3, generator=torch.Generator().manual_seed(1))
    out = model(batch)
    if name in FORECASTERS:
        assert out.logits.shape == (3, 4 * 2) and batch["y"].shape == (3, 8)
    elif name in CLASSIFIERS:
        assert out.logits.shape == (3, 4) and batch["y"].dtype == torch.long
    else:
        assert out.logits.shape == (3, batch["input_ids"].shape[1], 11)
    assert torch.isfinite(out.logits).all() and out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    for p_name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), p_name
    without_targets = {k: v for k, v in batch.items() if k not in TARGETS}
    assert model(without_targets).loss is None


@pytest.mark.parametrize("name", list(TINY))
def test_default_configs_run_their_example_batch(name):
    torch.manual_seed(0)
    model = create_model(name)  # the sizes a registry-wide test builds
    batch = model.example_batch(6, torch.Generator().manual_seed(0))
    out = model(batch)
    assert len(out.logits) == 6 and torch.isfinite(out.loss)
    assert model({k: v for k, v in batch.items() if k not in TARGETS}).logits.shape == out.logits.shape


def test_example_batch_is_reproducible_with_a_generator():
    model = create_model("gru_classifier", **TINY["gru_classifier"])
    a, b = (model.example_batch(4, torch.Generator().manual_seed(7)) for _ in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)


def _lstm_by_hand(x: torch.Tensor, lstm: torch.nn.LSTM) -> torch.Tensor:
    """The LSTM equations (gates i, f, g, o), one layer, one direction; returns the last hidden state (B, H)."""
    w_ih, w_hh, b = lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0
    h = torch.zeros(x.shape[0], lstm.hidden_size)
    c = torch.zeros_like(h)
    for t in range(x.shape[1]):
        i, f, g, o = (x[:, t] @ w_ih.T + h @ w_hh.T + b).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
    return h


def test_lstm_forecaster_matches_the_lstm_equations_and_its_head():
    torch.manual_seed(0)
    model = create_model("lstm_forecaster", in_features=3, dim=5, n_layers=1, horizon=4).eval()
    x = torch.randn(6, 9, 3)
    with torch.no_grad():
        expected = model.head(_lstm_by_hand(x, model.encoder.rnn))
        torch.testing.assert_close(model({"x": x}).logits, expected, rtol=1e-5, atol=1e-6)
    lstm = model.encoder.rnn  # forget-gate bias starts at 1 (b_ih + b_hh), the other gates at torch's init
    assert torch.equal(lstm.bias_ih_l0[5:10], torch.ones(5)) and torch.equal(lstm.bias_hh_l0[5:10], torch.zeros(5))


def test_stacked_bidirectional_forecaster_uses_both_final_states_of_the_top_layer():
    torch.manual_seed(0)
    model = create_model("lstm_forecaster", in_features=2, dim=4, n_layers=2, bidirectional=True,
                         horizon=3, dropout=0.3).eval()
    reference = torch.nn.LSTM(2, 4, num_layers=2, batch_first=True, bidirectional=True)
    reference.load_state_dict(model.encoder.rnn.state_dict())
    x = torch.randn(5, 7, 2)
    with torch.no_grad():
        out, (h_n, _) = reference(x)
        # top layer: forward state after the last step, backward state after reading back to the first
        torch.testing.assert_close(h_n[-2], out[:, -1, :4])
        torch.testing.assert_close(h_n[-1], out[:, 0, 4:])
        expected = model.head(torch.cat([h_n[-2], h_n[-1]], dim=1))
        torch.testing.assert_close(model({"x": x}).logits, expected, rtol=1e-5, atol=1e-6)
    assert model.head.in_features == 8


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_rnn_and_gru_encoders_match_torch(cell):
    torch.manual_seed(0)
    model = create_model(f"{cell}_classifier", in_features=3, dim=6, n_layers=2, num_classes=3).eval()
    reference = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU}[cell](3, 6, num_layers=2, batch_first=True)
    reference.load_state_dict(model.encoder.rnn.state_dict())
    x, y = torch.randn(4, 5, 3), torch.tensor([0, 2, 1, 2])
    with torch.no_grad():
        _, h_n = reference(x)
        expected = model.head(h_n[-1])
        out = model({"x": x, "y": y})
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.loss, F.cross_entropy(expected, y))


def test_residual_forecaster_adds_each_targets_last_value_horizon_major():
    torch.manual_seed(0)
    plain = create_model("gru_forecaster", in_features=3, dim=5, horizon=4, num_targets=2).eval()
    residual = create_model("gru_forecaster", in_features=3, dim=5, horizon=4, num_targets=2, residual=True)
    residual.load_state_dict(plain.state_dict())
    residual.eval()
    x = torch.randn(2, 6, 3)
    with torch.no_grad():
        delta = residual({"x": x}).logits - plain({"x": x}).logits  # (B, H * T)
    last = x[:, -1, :2]  # the two targets' last observed values
    torch.testing.assert_close(delta.reshape(2, 4, 2), last[:, None, :].expand(2, 4, 2))


@pytest.mark.parametrize(("loss", "reference"), [("mse", F.mse_loss), ("mae", F.l1_loss),
                                                  ("huber", lambda a, b: F.huber_loss(a, b, delta=0.5))])
def test_forecaster_losses(loss, reference):
    torch.manual_seed(0)
    model = create_model("rnn_forecaster", in_features=1, dim=4, horizon=3, loss=loss, huber_delta=0.5)
    batch = model.example_batch(5, torch.Generator().manual_seed(0))
    out = model(batch)
    torch.testing.assert_close(out.loss, reference(out.logits, batch["y"]))


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"^model\.cell: "):
        create_model("lstm_forecaster", cell="transformer")
    with pytest.raises(ConfigError, match=r"^model\.residual: needs the 2 targets among the 1 input features"):
        create_model("lstm_forecaster", in_features=1, num_targets=2, residual=True)
    with pytest.raises(ConfigError, match=r"^model\.class_weights: expected 3 weights, one per class"):
        create_model("lstm_classifier", num_classes=3, class_weights=[1.0, 2.0])
    with pytest.raises(ConfigError, match=r"^model\.tie_weights: needs embed_dim == dim, found 8 and 16"):
        create_model("char_lstm", embed_dim=8, dim=16, tie_weights=True)
    with pytest.raises(ConfigError, match=r"^model\.n_layres: unknown key; did you mean 'model\.n_layers'"):
        create_model("gru_forecaster", n_layres=8)


def test_classifier_class_weights_reach_the_loss():
    torch.manual_seed(0)
    model = create_model("gru_classifier", in_features=2, dim=4, num_classes=3, class_weights=[1.0, 2.0, 0.5])
    batch = model.example_batch(8, torch.Generator().manual_seed(3))
    out = model(batch)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, batch["y"], weight=torch.tensor([1, 2, 0.5])))


# --- the character language model --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LANGUAGE_MODELS)
def test_stepwise_generation_path_equals_one_full_forward(name):
    torch.manual_seed(0)
    model = create_model(name, vocab_size=13, embed_dim=6, dim=8, n_layers=2, dropout=0.2).eval()
    ids = torch.randint(0, 13, (3, 10))
    with torch.no_grad():
        full = model({"input_ids": ids}).logits  # (B, T, V)
        state = model.init_state(3)
        prompt_logits, state = model.step(ids[:, :4], state)  # a prefix at once, then one token at a time
        pieces = [prompt_logits]
        for t in range(4, 10):
            logits, state = model.step(ids[:, t:t + 1], state)
            pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)
    assert (state[0] if isinstance(state, tuple) else state).shape == (2, 3, 8)


def test_char_lm_loss_ignores_minus_100():
    torch.manual_seed(0)
    model = create_model("char_gru", vocab_size=9, embed_dim=4, dim=6, n_layers=1)
    batch = model.example_batch(4, torch.Generator().manual_seed(0))
    out = model(batch)
    scored = batch["labels"] != -100
    expected = F.cross_entropy(out.logits[scored], batch["labels"][scored])
    torch.testing.assert_close(out.loss, expected)
    assert (~scored).any()


def test_tied_weights_are_one_tensor_and_survive_save_and_load(tmp_path):
    torch.manual_seed(0)
    model = create_model("char_lstm", vocab_size=12, embed_dim=8, dim=8, n_layers=1, tie_weights=True)
    assert model.head.weight is model.embed.weight
    untied = create_model("char_lstm", vocab_size=12, embed_dim=8, dim=8, n_layers=1)
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in model.parameters()) == 12 * 8
    save_model(model, tmp_path / "model")
    loaded, meta = load_model(tmp_path / "model")
    assert meta["model"] == "char_lstm" and loaded.head.weight is loaded.embed.weight
    ids = torch.randint(0, 12, (2, 7))
    torch.testing.assert_close(loaded({"input_ids": ids}).logits, model.eval()({"input_ids": ids}).logits)


# --- a few real optimizer steps ----------------------------------------------------------------------------------


def test_lstm_forecaster_learns_a_sine_with_the_trainer(train_config):
    steps = torch.arange(400, dtype=torch.float32)
    wave = torch.sin(2 * math.pi * steps / 20)
    origins = torch.arange(16, 396)
    x = wave[origins[:, None] + torch.arange(-16, 0)].unsqueeze(-1)  # (S, 16, 1)
    y = wave[origins[:, None] + torch.arange(4)]  # (S, 4)
    data = TensorDictDataset({"x": x, "y": y})
    torch.manual_seed(0)
    model = create_model("lstm_forecaster", in_features=1, dim=16, n_layers=1, horizon=4)
    with torch.no_grad():
        before = model({"x": x, "y": y}).loss.item()
    Trainer(model, train_config(max_steps=80, batch_size=64, lr=2e-2), data).fit()
    model.eval()
    with torch.no_grad():
        after = model({"x": x, "y": y}).loss.item()
    assert before > 0.3 and after < 0.02, (before, after)
