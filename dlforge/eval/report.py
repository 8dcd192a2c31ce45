"""Per-example evaluation of a classifier: predictions in order, a per-class table, and the misclassified examples.

    pred, true, x = predict_classes(model, test_data)
    per_class(confusion, label_names)  # {"Coat": {"precision": .., "recall": .., "f1": .., "support": ..}, ...}
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from dlforge.data.dataset import collate_batch


@torch.no_grad()
def predict_classes(model: torch.nn.Module, data: Dataset, batch_size: int = 512, device: str | torch.device = "cpu",
                    keep_inputs: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(predicted class ids, true ids, the first `keep_inputs` misclassified inputs `x`) over `data`, in order."""
    was_training = model.training
    model.eval()
    preds, trues, wrong = [], [], []
    kept = 0
    for batch in DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate_batch):
        batch = {k: v.to(device) for k, v in batch.items()}
        pred = model({k: v for k, v in batch.items() if k != "y"}).logits.argmax(dim=-1).cpu()
        true = batch["y"].cpu()
        preds.append(pred)
        trues.append(true)
        if kept < keep_inputs:
            miss = batch["x"].cpu()[pred != true][: keep_inputs - kept]
            wrong.append(miss)
            kept += len(miss)
    model.train(was_training)
    x = torch.cat(wrong) if wrong else None
    return torch.cat(preds), torch.cat(trues), x


def per_class(confusion: list[list[int]], label_names: list[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of each class from a confusion matrix (rows true, columns predicted)."""
    m = torch.tensor(confusion, dtype=torch.float64)
    tp = m.diag()
    predicted, actual = m.sum(dim=0), m.sum(dim=1)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(tp))
    return {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(actual[i])} for i, name in enumerate(label_names)}
