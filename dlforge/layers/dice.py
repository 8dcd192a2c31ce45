"""Losses of semantic segmentation, picked by name: pixel-wise cross-entropy, soft Dice, and their sum.

All take logits (B, K, H, W) and a class map (B, H, W) of ids 0..K-1, where -100 marks pixels to ignore (VOC's
void border): those pixels count in no term. Soft Dice (Milletari et al. 2016, "V-Net"; the multi-class form of
segmentation-models-pytorch's DiceLoss) compares the softmax probabilities p with the one-hot target t over every
pixel of the batch, per class c:

    dice_c = 2 * sum(p_c * t_c) / (sum(p_c) + sum(t_c))

and the loss is 1 - the mean of dice_c over the classes present in the batch's target. Averaging over the present
classes only keeps a class absent from the batch from pulling the loss (its ideal Dice, with no pixel predicted,
would be 0 / 0); segmentation-models-pytorch zeroes those terms but divides by every class instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100
SEGMENTATION_LOSSES = ("cross_entropy", "dice", "ce_dice")
DICE_EPS = 1e-7  # keeps 0 / 0 away in float32; a class present in the target always has sum(t_c) >= 1


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """1 - mean soft Dice over the classes present in `target` (see the module): logits (B, K, H, W), target (B, H, W).
    0 when every pixel is ignored."""
    k = logits.shape[1]
    valid = target != ignore_index  # (B, H, W)
    probs = torch.softmax(logits.float(), dim=1)  # (B, K, H, W)
    t = target.clamp(min=0)
    classes = t[valid]  # (P,): the class of each valid pixel
    # sum(p_c * t_c) is the sum of each valid pixel's probability of its own class, by class: no one-hot tensor
    own = probs.gather(1, t[:, None])[:, 0][valid]  # (P,)
    inter = torch.zeros(k, dtype=probs.dtype, device=probs.device).index_add(0, classes, own)  # (K,)
    truth = torch.bincount(classes, minlength=k).to(probs.dtype)  # (K,)
    predicted = (probs * valid[:, None]).sum(dim=(0, 2, 3))  # (K,), ignored pixels left out
    dice = 2 * inter / (predicted + truth).clamp(min=DICE_EPS)
    present = truth > 0
    if not present.any():
        return logits.sum() * 0.0  # nothing to score, yet a graph for backward
    return 1 - dice[present].mean()


class SegmentationLoss(nn.Module):
    """`cross_entropy`, `dice` or `ce_dice` (their sum, each term weighted 1) of logits (B, K, H, W) against a class
    map (B, H, W), -100 ignored."""

    def __init__(self, name: str):
        super().__init__()
        if name not in SEGMENTATION_LOSSES:
            raise ValueError(f"unknown segmentation loss {name!r}; expected one of {', '.join(SEGMENTATION_LOSSES)}")
        self.name = name

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        loss = logits.sum() * 0.0
        if self.name in ("cross_entropy", "ce_dice") and (target != IGNORE_INDEX).any():
            loss = loss + F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)  # mean over the valid pixels
        if self.name in ("dice", "ce_dice"):
            loss = loss + soft_dice_loss(logits, target)
        return loss

    def extra_repr(self) -> str:
        return f"name={self.name!r}"
