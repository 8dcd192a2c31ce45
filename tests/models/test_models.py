"""The model zoo, generated from the registry: every model builds, runs forward and backward; presets match sklearn."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import log_loss

from dlforge.data.dataset import TensorDictDataset
from dlforge.errors import ConfigError
from dlforge.layers import ACTIVATIONS, NORMS
from dlforge.registry import create_model, list_models
from dlforge.train.trainer import Trainer

BATCH = 6
ONE_OUTPUT_LOSSES = ("bce", "mse", "mae", "huber")  # one logit per row; the others one per class


def random_targets(loss: str, out_features: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """Targets of the type the loss reads: class ids, 0/1 labels or real numbers."""
    if loss in ("cross_entropy", "perceptron"):
        return torch.randint(0, out_features, (n,), generator=generator)
    if loss == "bce":
        return torch.randint(0, 2, (n,), generator=generator)
    return torch.randn(n, generator=generator)


def forward_backward(model: torch.nn.Module) -> None:
    """Forward a random batch of an MLP, check the logits and loss, backward, check every gradient."""
    c = model.config
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, c.in_features, generator=g)
    out = model({"x": x, "y": random_targets(c.loss, c.out_features, BATCH, g)})
    width = 1 if c.loss in ONE_OUTPUT_LOSSES else c.out_features
    assert out.logits.shape == (BATCH, width)
    assert torch.isfinite(out.logits).all()
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    check_gradients(model)


TARGET_KEYS = ("y", "labels")


def check_gradients(model: torch.nn.Module) -> None:
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_runs_forward_and_backward(name):
    torch.manual_seed(0)
    model = create_model(name)
    assert model.registry_name == name
    batch = model.example_batch(BATCH, generator=torch.Generator().manual_seed(0))
    self_supervised = getattr(model, "self_supervised", False)  # the input is the target (autoencoders, VAEs)
    assert self_supervised or any(k in batch for k in TARGET_KEYS), "example_batch must carry targets"
    out = model(batch)
    assert len(out.logits) == BATCH
    assert torch.isfinite(out.logits).all()
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    check_gradients(model)
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())  # the random batch teaches something

    model.zero_grad()
    if self_supervised:
        return
    no_targets = model({k: v for k, v in batch.items() if k not in TARGET_KEYS})
    assert no_targets.loss is None  # the contract: a loss only when the batch carries targets
    assert no_targets.logits.shape == out.logits.shape


@pytest.mark.parametrize(("act", "norm"), list(itertools.product(ACTIVATIONS, NORMS)))
def test_mlp_builds_and_runs_with_every_activation_and_norm(act, norm):
    torch.manual_seed(0)
    model = create_model("mlp", in_features=5, out_features=4, hidden=[7, 6], act=act, norm=norm)
    assert [type(block.act) for block in model.blocks] == [ACTIVATIONS[act]] * 2
    expected_norm = {"batchnorm": torch.nn.BatchNorm1d, "layernorm": torch.nn.LayerNorm,
                     "rmsnorm": torch.nn.RMSNorm, "none": torch.nn.Identity}[norm]
    assert [type(block.norm) for block in model.blocks] == [expected_norm] * 2
    assert [(b.linear.in_features, b.linear.out_features) for b in model.blocks] == [(5, 7), (7, 6)]
    forward_backward(model)


def test_unknown_model_key_names_it_and_suggests_the_near_one():
    with pytest.raises(ConfigError, match=r"^model\.hiden: unknown key; did you mean 'model\.hidden'\?"):
        create_model("mlp", hiden=[8])


@pytest.mark.parametrize(("key", "value"), [("dropout", 1.5), ("dropout", -0.1), ("hidden", [8, 0]),
                                            ("act", "gleu"), ("norm", "groupnorm"), ("loss", "hinge")])
def test_out_of_range_model_values_name_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"^model\.{key}: .*{re.escape(repr(value))}"):
        create_model("mlp", **{key: value})


def test_unknown_model_name_suggests_the_near_one():
    with pytest.raises(ConfigError, match=r"model\.name: unknown model 'mlpp'; did you mean 'mlp'\?"):
        create_model("mlpp")


# --- presets against sklearn ---------------------------------------------------------------------------------------


def standardized(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean(0)) / x.std(0)


def full_batch_gd(model: torch.nn.Module, data: TensorDictDataset, steps: int, lr: float, train_config) -> None:
    cfg = train_config(max_steps=steps, batch_size="full", optimizer="sgd", lr=lr, momentum=0.9, log_every=steps)
    Trainer(model, cfg, data).fit()


def test_linear_regression_by_gradient_descent_matches_sklearn(train_config):
    g = torch.Generator().manual_seed(0)
    x = standardized(torch.randn(200, 5, generator=g) @ torch.randn(5, 5, generator=g))  # correlated features
    y = x @ torch.randn(5, generator=g) + 0.5 + 0.3 * torch.randn(200, generator=g)
    torch.manual_seed(0)
    model = create_model("linear_regression", in_features=5)
    full_batch_gd(model, TensorDictDataset({"x": x, "y": y}), steps=400, lr=0.1, train_config=train_config)

    reference = LinearRegression().fit(x.double().numpy(), y.double().numpy())
    np.testing.assert_allclose(model.head.weight.detach().numpy()[0], reference.coef_, atol=1e-3)
    np.testing.assert_allclose(model.head.bias.item(), reference.intercept_, atol=1e-3)


def test_logistic_regression_by_gradient_descent_agrees_with_sklearn(train_config):
    g = torch.Generator().manual_seed(0)
    x = standardized(torch.randn(400, 4, generator=g))
    scores = 2.0 * x @ torch.randn(4, 3, generator=g)
    gumbel = -torch.log(-torch.log(torch.rand(400, 3, generator=g)))
    y = (scores + gumbel).argmax(dim=1)  # drawn from a softmax model: overlapping, not separable classes
    torch.manual_seed(0)
    model = create_model("logistic_regression", in_features=4, out_features=3)
    full_batch_gd(model, TensorDictDataset({"x": x, "y": y}), steps=400, lr=0.5, train_config=train_config)

    reference = LogisticRegression(C=np.inf, max_iter=1000).fit(x.numpy(), y.numpy())  # C=inf: no penalty
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model({"x": x}).logits, dim=1).numpy()
    agreement = (probs.argmax(1) == reference.predict(x.numpy())).mean()
    assert agreement >= 0.98
    assert log_loss(y.numpy(), probs) == pytest.approx(log_loss(y.numpy(), reference.predict_proba(x.numpy())),
                                                      abs=1e-3)
