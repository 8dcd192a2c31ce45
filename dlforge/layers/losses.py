"""Losses picked by name, and the matching output transform used at prediction time.

cross_entropy (label smoothing, class weights) and perceptron take (B, C) logits and (B,) class ids; bce takes (B, 1)
logits and (B,) 0/1 targets (class weights become pos_weight); mse, mae and huber take (B, 1) outputs and (B,) targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("cross_entropy", "bce", "perceptron", "mse", "mae", "huber")
CLASSIFICATION_LOSSES = ("cross_entropy", "bce", "perceptron")


class Loss(nn.Module):
    def __init__(self, name: str, label_smoothing: float = 0.0, class_weights: list[float] | None = None,
                 huber_delta: float = 1.0):
        super().__init__()
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}")
        self.name, self.label_smoothing, self.huber_delta = name, label_smoothing, huber_delta
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.name == "cross_entropy":
            return F.cross_entropy(logits, target, weight=self.class_weights, label_smoothing=self.label_smoothing)
        if self.name == "perceptron":
            # Rosenblatt's criterion, multiclass form: max_j f_j(x) - f_y(x), zero once the true class wins.
            true = logits.gather(1, target[:, None]).squeeze(1)
            return (logits.max(dim=1).values - true).mean()
        if self.name == "bce":
            pos_weight = None
            if self.class_weights is not None:  # weights for classes [0, 1] -> pos_weight = w1 / w0
                pos_weight = self.class_weights[1:2] / self.class_weights[0]
            return F.binary_cross_entropy_with_logits(logits.squeeze(1), target.float(), pos_weight=pos_weight)
        pred, target = logits.squeeze(1), target.float()
        if self.name == "mse":
            return F.mse_loss(pred, target)
        if self.name == "mae":
            return F.l1_loss(pred, target)
        return F.huber_loss(pred, target, delta=self.huber_delta)


def to_probabilities(logits: torch.Tensor, loss: str) -> torch.Tensor:
    """Class probabilities (B, C) from logits: sigmoid for bce (two columns), softmax otherwise."""
    if loss == "bce":
        p = torch.sigmoid(logits.float().squeeze(-1))
        return torch.stack([1 - p, p], dim=-1)
    return torch.softmax(logits.float(), dim=-1)
