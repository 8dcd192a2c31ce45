"""Segmentation metrics against torchmetrics and scikit-learn on random class maps with ignored pixels: the pixel
confusion matrix, pixel accuracy, per-class IoU, mIoU and mean Dice over the classes that occur, accumulated over
batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix, f1_score, jaccard_score
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from dlforge.eval.metrics import TaskMetrics
from dlforge.eval.segmentation import SegmentationMetrics, metric_name
from dlforge.models.output import Output

K = 5
NAMES = ["background", "T-shirt/top", "Trouser", "Bag", "Ankle boot"]


def random_batches(seed: int = 0, n: int = 3, absent: int | None = None) -> list[dict[str, torch.Tensor]]:
    """Batches of logits (2, K, 8, 9) and targets (2, 8, 9) with -100 pixels; the class `absent` appears in neither
    the targets nor the argmax of the logits."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        logits = torch.randn(2, K, 8, 9, generator=g)
        y = torch.randint(0, K, (2, 8, 9), generator=g)
        y[torch.rand(2, 8, 9, generator=g) < 0.1] = -100
        if absent is not None:
            logits[:, absent] = -10.0
            y[y == absent] = (absent + 1) % K
        batches.append({"logits": logits, "y": y})
    return batches


def flat_valid(batches: list[dict[str, torch.Tensor]]) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) class of every pixel not ignored, for scikit-learn."""
    y = torch.cat([b["y"].flatten() for b in batches])
    pred = torch.cat([b["logits"].argmax(dim=1).flatten() for b in batches])
    keep = y != -100
    return y[keep].numpy(), pred[keep].numpy()


def computed(batches: list[dict[str, torch.Tensor]]) -> tuple[SegmentationMetrics, dict[str, float]]:
    metrics = SegmentationMetrics(K, NAMES)
    for b in batches:
        metrics.update(Output(logits=b["logits"]), {"y": b["y"]})
    return metrics, metrics.compute()


def test_confusion_accuracy_and_iou_match_sklearn_and_torchmetrics():
    batches = random_batches()
    metrics, result = computed(batches)
    true, pred = flat_valid(batches)
    assert metrics.confusion_matrix() == confusion_matrix(true, pred, labels=list(range(K))).tolist()

    accuracy = MulticlassAccuracy(K, average="micro", ignore_index=-100)
    jaccard = MulticlassJaccardIndex(K, average=None, ignore_index=-100)
    macro = MulticlassJaccardIndex(K, average="macro", ignore_index=-100)
    for b in batches:
        for m in (accuracy, jaccard, macro):
            m.update(b["logits"], b["y"])
    assert result["pixel_accuracy"] == pytest.approx(float(accuracy.compute()), abs=1e-6)
    per_class = jaccard.compute().tolist()
    for name, iou in zip(NAMES, per_class, strict=True):
        assert result[f"iou_{metric_name(name)}"] == pytest.approx(iou, abs=1e-6)
    assert result["miou"] == pytest.approx(float(macro.compute()), abs=1e-6)  # every class occurs here
    assert result["miou"] == pytest.approx(jaccard_score(true, pred, average="macro"), abs=1e-9)
    assert result["mean_dice"] == pytest.approx(f1_score(true, pred, average="macro"), abs=1e-9)  # Dice = F1
    assert "iou_T-shirt_top" in result and "iou_Ankle_boot" in result


def test_a_class_that_never_occurs_has_no_iou_and_stays_out_of_the_means():
    batches = random_batches(seed=1, absent=3)
    metrics, result = computed(batches)
    true, pred = flat_valid(batches)
    assert 3 not in set(true) | set(pred)
    assert "iou_Bag" not in result and len([k for k in result if k.startswith("iou_")]) == K - 1
    occurring = [0, 1, 2, 4]
    assert result["miou"] == pytest.approx(jaccard_score(true, pred, labels=occurring, average="macro"), abs=1e-9)
    assert result["mean_dice"] == pytest.approx(f1_score(true, pred, labels=occurring, average="macro"), abs=1e-9)
    scores = metrics.scores()
    assert np.isnan(scores["iou"][3]) and scores["pixels"][3] == 0


def test_batches_add_up_to_the_whole_split_and_reset_forgets():
    batches = random_batches(seed=2, n=4)
    one_shot = SegmentationMetrics(K, NAMES)
    logits, y = torch.cat([b["logits"] for b in batches]), torch.cat([b["y"] for b in batches])
    one_shot.update(Output(logits=logits), {"y": y})
    _, result = computed(batches)
    assert one_shot.compute() == result
    one_shot.reset()
    assert one_shot.compute() == {} and one_shot.confusion_matrix() is None


def test_the_task_builds_the_metrics_and_a_class_out_of_range_is_refused():
    metrics = TaskMetrics("segmentation", num_classes=3, class_names=["background", "a", "b"])
    assert isinstance(metrics, SegmentationMetrics)
    with pytest.raises(ValueError, match="target class 7 outside 0..2"):
        metrics.update(Output(logits=torch.zeros(1, 3, 2, 2)), {"y": torch.full((1, 2, 2), 7)})
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        SegmentationMetrics(3, ["background", "a"])
    info = {"task": "segmentation", "num_classes": 10, "segment_names": ["background", *map(str, range(10))]}
    assert TaskMetrics.from_info(info).num_classes == 11
