"""Classification: a class per sample (tabular rows, images, sequences, passages of text).

Metrics: accuracy, macro precision/recall/F1, AUROC, top-5 (`dlforge.eval.metrics.ClassificationMetrics`). Report:
the test confusion matrix (PNG), per-class precision/recall/F1, and for images a grid of misclassified examples.
Predict: a CSV/Parquet file of feature rows, or image files, to a label and class probabilities per row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dlforge.eval.metrics import ClassificationMetrics
from dlforge.layers.losses import to_probabilities
from dlforge.registry import register_task
from dlforge.tasks.base import RunReport, Task, choose_loss, feature_inputs


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
        """Label and class probabilities for each row of a CSV/Parquet file, or each image file."""
        from dlforge.data.tabular import decode_labels

        pre = model.meta["extra"]["preprocessing.json"]
        x, lines = feature_inputs(pre, input_path)
        with torch.no_grad():
            logits = model({"x": x}).logits
        probs = to_probabilities(logits, model.config.loss)
        ids = probs.argmax(dim=1).tolist()
        labels = [pre["label_names"][i] for i in ids] if pre.get("kind") == "image" else decode_labels(pre, ids)
        names = pre["label_names"]
        rows = []
        for line, label, p in zip(lines, labels, probs.tolist(), strict=True):
            probs_by_name = {f"p({n})": round(v, 6) for n, v in zip(names, p, strict=True)}
            rows.append({"line": line, "prediction": label, **probs_by_name})
        return rows
