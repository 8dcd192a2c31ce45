"""Shared layers: activations, norms and losses picked by name, and drop-path, each against torch or its formula."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlforge.layers import ACTIVATIONS, LOSSES, NORMS, Loss, is_norm, make_activation, make_norm, to_probabilities
from dlforge.layers.droppath import DropPath


def randn(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def class_ids(n: int, classes: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed))


# --- activations ---------------------------------------------------------------------------------------------------

ACTIVATION_REFERENCES = {
    "relu": F.relu,
    "leaky_relu": lambda x: F.leaky_relu(x, negative_slope=0.01),
    "gelu": lambda x: F.gelu(x, approximate="none"),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "silu": F.silu,
    "elu": lambda x: F.elu(x, alpha=1.0),
    "identity": lambda x: x,
}


def test_every_activation_has_a_reference():
    assert set(ACTIVATIONS) == set(ACTIVATION_REFERENCES)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_matches_torch_functional(name):
    x = randn(7, 5, scale=3.0)
    act = make_activation(name)
    assert isinstance(act, nn.Module)
    assert act is not make_activation(name)  # a fresh module per call, never a shared one
    torch.testing.assert_close(act(x), ACTIVATION_REFERENCES[name](x), rtol=0, atol=0)


def test_unknown_activation_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown activation 'gleu'") as err:
        make_activation("gleu")
    assert all(name in str(err.value) for name in ACTIVATIONS)


# --- norms ---------------------------------------------------------------------------------------------------------


def test_rmsnorm_is_the_formula():
    norm = make_norm("rmsnorm", 6)
    with torch.no_grad():
        norm.weight.copy_(randn(6, seed=2))
    x = randn(5, 6, scale=3.0)
    eps = torch.finfo(torch.float32).eps  # nn.RMSNorm's default eps
    expected = x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * norm.weight
    torch.testing.assert_close(norm(x), expected)


def test_layernorm_is_torch_layernorm_over_the_features():
    norm = make_norm("layernorm", 6)
    assert isinstance(norm, nn.LayerNorm) and norm.normalized_shape == (6,)
    with torch.no_grad():
        norm.weight.copy_(randn(6, seed=2))
        norm.bias.copy_(randn(6, seed=3))
    x = randn(5, 6, scale=3.0)
    torch.testing.assert_close(norm(x), F.layer_norm(x, (6,), norm.weight, norm.bias, eps=1e-5))


def test_batchnorm_is_torch_batchnorm_over_the_batch():
    norm = make_norm("batchnorm", 6)
    assert isinstance(norm, nn.BatchNorm1d) and norm.num_features == 6
    x = randn(10, 6, scale=3.0)
    expected = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)  # training mode: batch statistics
    torch.testing.assert_close(norm.train()(x), expected)


def test_none_norm_is_the_identity():
    norm = make_norm("none", 6)
    x = randn(4, 6)
    assert isinstance(norm, nn.Identity)
    assert torch.equal(norm(x), x)


def test_unknown_norm_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown norm 'groupnorm'") as err:
        make_norm("groupnorm", 6)
    assert all(name in str(err.value) for name in NORMS)


@pytest.mark.parametrize(("module", "expected"), [
    *[(make_norm(name, 4), name != "none") for name in NORMS],
    (nn.BatchNorm2d(4), True),
    (nn.GroupNorm(2, 4), True),
    (nn.InstanceNorm1d(4), True),
    (nn.Linear(4, 4), False),
    (nn.Embedding(4, 4), False),
    (nn.Identity(), False),
], ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else str(v))
def test_is_norm(module, expected):
    assert is_norm(module) is expected


# --- losses --------------------------------------------------------------------------------------------------------

N, C = 8, 3


def test_every_loss_has_a_parity_test():
    assert set(LOSSES) == {"cross_entropy", "bce", "perceptron", "mse", "mae", "huber"}


def test_cross_entropy_with_label_smoothing_and_class_weights_matches_torch():
    logits, target = randn(N, C), class_ids(N, C)
    weights = [0.5, 2.0, 1.0]
    loss = Loss("cross_entropy", label_smoothing=0.1, class_weights=weights)(logits, target)
    reference = nn.CrossEntropyLoss(weight=torch.tensor(weights), label_smoothing=0.1)(logits, target)
    torch.testing.assert_close(loss, reference)


def test_cross_entropy_label_smoothing_is_the_formula():
    logits, target, eps = randn(N, C), class_ids(N, C), 0.2
    log_p = torch.log_softmax(logits, dim=1)
    nll = -log_p.gather(1, target[:, None]).squeeze(1)
    expected = ((1 - eps) * nll + eps * (-log_p).mean(dim=1)).mean()  # (1-ε)·NLL + ε·uniform cross-entropy
    torch.testing.assert_close(Loss("cross_entropy", label_smoothing=eps)(logits, target), expected)


def test_bce_matches_torch_and_class_weights_become_pos_weight():
    logits, target = randn(N, 1), class_ids(N, 2)
    plain = Loss("bce")(logits, target)
    torch.testing.assert_close(plain, nn.BCEWithLogitsLoss()(logits.squeeze(1), target.float()))

    w0, w1 = 0.5, 2.0
    weighted = Loss("bce", class_weights=[w0, w1])(logits, target)
    reference = F.binary_cross_entropy_with_logits(logits.squeeze(1), target.float(),
                                                   pos_weight=torch.tensor([w1 / w0]))
    torch.testing.assert_close(weighted, reference)
    p, y = torch.sigmoid(logits.squeeze(1)), target.float()
    by_hand = -(w1 / w0 * y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
    torch.testing.assert_close(weighted, by_hand)


def test_perceptron_criterion_is_zero_when_the_true_class_wins_and_the_margin_otherwise():
    logits, target = randn(N, C), class_ids(N, C)
    loss_fn = Loss("perceptron")

    winners = logits.argmax(dim=1)
    assert loss_fn(logits, winners).item() == 0.0

    expected = (logits.max(dim=1).values - logits.gather(1, target[:, None]).squeeze(1)).mean()
    loss = loss_fn(logits, target)
    assert (target != winners).any() and loss.item() > 0
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize(("name", "reference"), [
    ("mse", nn.MSELoss()),
    ("mae", nn.L1Loss()),
    ("huber", nn.HuberLoss(delta=0.5)),
])
def test_regression_losses_match_torch_on_one_output_per_row(name, reference):
    pred, target = randn(N, 1, scale=2.0), randn(N, seed=4)
    loss = Loss(name, huber_delta=0.5)(pred, target)
    assert loss.ndim == 0
    torch.testing.assert_close(loss, reference(pred.squeeze(1), target))  # (B, 1) against (B,), no broadcasting


def test_half_precision_logits_give_a_float32_loss():
    logits, target = randn(N, C).bfloat16(), class_ids(N, C)
    loss = Loss("cross_entropy")(logits, target)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, F.cross_entropy(logits.float(), target))


def test_unknown_loss_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown loss 'hinge'") as err:
        Loss("hinge")
    assert all(name in str(err.value) for name in LOSSES)


# --- probabilities -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["cross_entropy", "perceptron"])
def test_probabilities_are_a_softmax(loss):
    logits = randn(N, C, scale=3.0)
    probs = to_probabilities(logits, loss)
    torch.testing.assert_close(probs, torch.softmax(logits, dim=1))
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(N))


def test_bce_probabilities_are_two_columns():
    logits = randn(N, 1, scale=3.0)
    probs = to_probabilities(logits, "bce")
    p = torch.sigmoid(logits.squeeze(1))
    assert probs.shape == (N, 2)
    torch.testing.assert_close(probs, torch.stack([1 - p, p], dim=1))
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(N))


# --- drop-path -----------------------------------------------------------------------------------------------------


def test_drop_path_keeps_or_drops_whole_samples_and_the_expectation():
    drop = DropPath(0.25)
    x = torch.ones(4000, 2, 3, 3)
    torch.manual_seed(0)
    out = drop(x)
    per_sample = out.flatten(1)
    assert ((per_sample == 0).all(1) | (per_sample == 1 / 0.75).all(1)).all()  # all or nothing per sample
    assert (per_sample[:, 0] == 0).float().mean().item() == pytest.approx(0.25, abs=0.03)
    assert out.mean().item() == pytest.approx(1.0, abs=0.05)
    assert torch.equal(drop.eval()(x), x)


def timm_drop_path(x: torch.Tensor, p: float) -> torch.Tensor:
    """timm.layers.drop_path(x, p, training=True, scale_by_keep=True), as its source reads: a (B, 1, ..., 1) mask of
    Bernoulli(1 - p) draws from torch's global RNG, divided by 1 - p, times x."""
    keep = 1 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


@pytest.mark.parametrize("shape", [(64, 3, 5, 5), (64, 7, 8), (64, 8)])
def test_drop_path_draws_and_scales_as_timm_for_any_rank(shape):
    x = randn(*shape)
    drop = DropPath(0.3)
    torch.manual_seed(5)
    ours = drop(x)
    torch.manual_seed(5)
    torch.testing.assert_close(ours, timm_drop_path(x, 0.3))  # the same draws: the same samples dropped


def test_drop_path_is_the_identity_at_rate_0_and_in_eval_and_refuses_a_rate_of_1():
    x = randn(8, 4, 3, 3)
    assert DropPath(0.0)(x) is x
    assert DropPath(0.5).eval()(x) is x
    with pytest.raises(ValueError, match="drop-path rate"):
        DropPath(1.0)
