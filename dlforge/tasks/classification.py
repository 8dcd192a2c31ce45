"""Classification: a class per sample (tabular rows, images, sequences, passages of text).

Metrics: accuracy, macro precision/recall/F1, AUROC, top-5 (`dlforge.eval.metrics.ClassificationMetrics`). Report:
the test confusion matrix (PNG), per-class precision/recall/F1, and for images a grid of misclassified examples.
Predict: a label and class probabilities for each new input, read as the model's training inputs were: rows of a
CSV/Parquet file, image files, runs of consecutive days, texts (`dlforge.tasks.inputs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dlforge.eval.metrics import ClassificationMetrics
from dlforge.layers.losses import to_probabilities
from dlforge.registry import register_task
from dlforge.tasks.base import RunReport, Task, choose_loss
from dlforge.tasks.inputs import input_usage, predict_logits


@register_task("classification")
class Classification(Task):
    """A class per sample."""

    name = "classification"

    def metric_set(self, num_classes: int | None = None, loss_name: str = "cross_entropy") -> ClassificationMetrics:
        return ClassificationMetrics(num_classes, loss_name)

    def metrics(self, info: dict[str, Any], loss_name: str = "", split: str = "val") -> ClassificationMetrics:
        return ClassificationMetrics(info.get("num_classes"), loss_name or "cross_entropy")

    def model_options(self, user: dict[str, Any], fields: set[str], info: dict[str, Any], data_name: str
                      ) -> dict[str, Any]:
        return choose_loss(self.name, user, fields, info, data_name)

    def test_report(self, run: RunReport) -> dict[str, Any]:
        """Test confusion matrix PNG, per-class precision/recall/F1, and for images a grid of misclassified ones."""
        from dlforge.eval.report import per_class, predict_classes
        from dlforge.runs.plots import plot_confusion_matrix, plot_image_grid

        data = run.data
        names = [str(n) for n in data.info["label_names"]]
        confusion = run.metrics.confusion_matrix()
        plot_confusion_matrix(confusion, names, run.run_path / "plots" / "confusion.png",
                              title=f"{run.name}: test confusion matrix")
        reports: dict[str, Any] = {"test_per_class": per_class(confusion, names)}
        if data.info.get("modality") == "image":
            from dlforge.data.images import denormalize

            pred, true, x = predict_classes(run.model, data.test, device=run.device, keep_inputs=32)
            if x is not None:
                wrong = (pred != true).nonzero().squeeze(1)[: len(x)]
                titles = [f"true {names[true[i]]}\npred {names[pred[i]]}" for i in wrong.tolist()]
                plot_image_grid(denormalize(data.preprocessing, x).numpy(), titles,
                                run.run_path / "plots" / "misclassified.png",
                                title=f"{run.name}: misclassified test images")
        return reports

    def predict(self, model: torch.nn.Module, input_path: Path) -> list[dict[str, Any]]:
        """Label and class probabilities for each input: a row of a table, an image file, a run of days, a text."""
        from dlforge.data.tabular import decode_labels

        pre = model.meta["extra"]["preprocessing.json"]
        logits, keys = predict_logits(model, input_path)
        probs = to_probabilities(logits, getattr(model.config, "loss", "cross_entropy"))
        labels = decode_labels(pre, probs.argmax(dim=1))
        names = pre["label_names"]
        rows = []
        for key, label, p in zip(keys, labels, probs.tolist(), strict=True):
            probs_by_name = {f"p({n})": round(v, 6) for n, v in zip(names, p, strict=True)}
            rows.append({**key, "prediction": label, **probs_by_name})
        return rows

    def predict_input(self, preprocessing: dict[str, Any]) -> tuple[str, str] | None:
        usage = input_usage(preprocessing)
        if usage is None:
            return None
        return usage[0], f"{usage[1]}; gives a label and the probability of each class per input"
