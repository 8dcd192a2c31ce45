"""Task metrics: parity with scikit-learn, accumulation over batches, bce, regression un-scaling, reset."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from dlforge.eval import TaskMetrics, lower_is_better
from dlforge.models.output import Output


def classification_data(n: int = 300, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    logits = torch.randn(n, classes, generator=g) + 1.5 * torch.nn.functional.one_hot(y, classes)  # better than chance
    return logits, y


def feed(metrics: TaskMetrics, logits: torch.Tensor, y: torch.Tensor, batch_size: int) -> TaskMetrics:
    for start in range(0, len(y), batch_size):
        metrics.update(Output(logits=logits[start:start + batch_size]), {"y": y[start:start + batch_size]})
    return metrics


def sklearn_classification(y: torch.Tensor, probs: torch.Tensor) -> dict[str, float]:
    y_np, p_np = y.numpy(), probs.double().numpy()
    pred = p_np.argmax(1)
    score = p_np[:, 1] if p_np.shape[1] == 2 else p_np  # sklearn takes binary scores as the positive column
    return {
        "accuracy": skm.accuracy_score(y_np, pred),
        "precision": skm.precision_score(y_np, pred, average="macro", zero_division=0),
        "recall": skm.recall_score(y_np, pred, average="macro", zero_division=0),
        "f1": skm.f1_score(y_np, pred, average="macro", zero_division=0),
        "auroc": skm.roc_auc_score(y_np, score, multi_class="ovr", average="macro"),
    }


@pytest.mark.parametrize("batch_size", [300, 64, 7])
def test_classification_parity_with_sklearn(batch_size):
    logits, y = classification_data()
    metrics = feed(TaskMetrics("classification", num_classes=4), logits, y, batch_size)
    result = metrics.compute()
    assert set(result) == {"accuracy", "precision", "recall", "f1", "auroc"}  # no top-5 with 4 classes
    expected = sklearn_classification(y, torch.softmax(logits, dim=-1))
    assert result == pytest.approx(expected, abs=1e-6)
    assert metrics.confusion_matrix() == skm.confusion_matrix(y.numpy(), logits.argmax(1).numpy()).tolist()


def test_batches_accumulate_to_the_same_as_one_update():
    logits, y = classification_data(n=257, classes=7, seed=1)
    whole = feed(TaskMetrics("classification", num_classes=7), logits, y, 257)
    batched = feed(TaskMetrics("classification", num_classes=7), logits, y, 32)
    assert batched.compute() == pytest.approx(whole.compute(), abs=1e-6)
    assert batched.confusion_matrix() == whole.confusion_matrix()


def test_top5_accuracy_above_five_classes():
    logits, y = classification_data(n=400, classes=8, seed=2)
    result = feed(TaskMetrics("classification", num_classes=8), logits, y, 50).compute()
    probs = torch.softmax(logits, dim=-1).double().numpy()
    expected = skm.top_k_accuracy_score(y.numpy(), probs, k=5, labels=list(range(8)))
    assert result["top5_accuracy"] == pytest.approx(expected, abs=1e-6)
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(y.numpy(), probs.argmax(1)), abs=1e-6)


def test_bce_is_two_classes():
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 2, (200,), generator=g)
    logits = (torch.randn(200, generator=g) + 1.2 * (2 * y - 1)).unsqueeze(1)  # (B, 1)
    metrics = feed(TaskMetrics("classification", loss_name="bce"), logits, y, 50)
    assert metrics.num_classes == 2
    p = torch.sigmoid(logits.squeeze(1))
    expected = sklearn_classification(y, torch.stack([1 - p, p], dim=1))
    assert metrics.compute() == pytest.approx(expected, abs=1e-6)
    assert len(metrics.confusion_matrix()) == 2


def test_auroc_with_absent_classes():
    logits, _ = classification_data(n=60, classes=3)
    only_zero = torch.zeros(60, dtype=torch.long)
    result = feed(TaskMetrics("classification", num_classes=3), logits, only_zero, 20).compute()
    assert math.isnan(result["auroc"])
    assert result["accuracy"] == pytest.approx(float((logits.argmax(1) == 0).float().mean()))

    # Two of three classes present: macro over those two, not dragged down by the absent one.
    y = torch.arange(60) % 2
    result = feed(TaskMetrics("classification", num_classes=3), logits, y, 20).compute()
    probs = torch.softmax(logits, dim=-1).double().numpy()
    expected = np.mean([skm.roc_auc_score(y.numpy() == c, probs[:, c]) for c in (0, 1)])
    assert result["auroc"] == pytest.approx(expected, abs=1e-6)


def test_regression_in_original_units():
    g = torch.Generator().manual_seed(4)
    mean, std = 50.0, 8.0
    y_true = mean + std * torch.randn(150, generator=g)
    pred_true = y_true + 3.0 * torch.randn(150, generator=g)
    # The model sees standardized targets and outputs standardized predictions of shape (B, 1).
    y_scaled, logits = (y_true - mean) / std, ((pred_true - mean) / std).unsqueeze(1)
    metrics = feed(TaskMetrics("regression", target_mean=mean, target_std=std), logits, y_scaled, 40)
    result = metrics.compute()
    y_np, p_np = y_true.double().numpy(), pred_true.double().numpy()
    assert result == pytest.approx({
        "mae": skm.mean_absolute_error(y_np, p_np),
        "rmse": math.sqrt(skm.mean_squared_error(y_np, p_np)),
        "r2": skm.r2_score(y_np, p_np),
    }, rel=1e-4)
    assert metrics.confusion_matrix() is None


def test_reset():
    logits, y = classification_data()
    metrics = TaskMetrics("classification", num_classes=4).to("cpu")
    feed(metrics, logits[:100], y[:100], 50)
    metrics.reset()
    assert metrics.compute() == {} and metrics.confusion_matrix() is None
    feed(metrics, logits, y, 50)
    assert metrics.compute() == pytest.approx(feed(TaskMetrics("classification", num_classes=4), logits, y, 50)
                                              .compute(), abs=1e-7)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown task"):
        TaskMetrics("tagging")
    with pytest.raises(ValueError, match="num_classes >= 2"):
        TaskMetrics("classification")


@pytest.mark.parametrize(
    ("name", "lower"),
    [("loss", True), ("val/loss", True), ("train/mae", True), ("rmse", True), ("mse", True), ("perplexity", True),
     ("val/accuracy", False), ("f1", False), ("auroc", False), ("r2", False), ("top5_accuracy", False)],
)
def test_lower_is_better(name, lower):
    assert lower_is_better(name) is lower
