"""The one model contract: `forward(batch) -> Output`."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Output:
    """What every model returns. `loss` is set when the batch carried targets; the Trainer never builds a loss."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None


@dataclass
class DetectionOutput(Output):
    """A detector's Output: `logits` are its dense class scores; in eval mode the decoded detections, padded to the
    batch's largest count D (at least 1) so that the Output stays tensors (the batch contract's padding):

    boxes (B, D, 4) xyxy pixels of the input, scores (B, D), labels (B, D) class index (-1 on padding),
    detection_mask (B, D) which slots hold a detection; with a mask head, masks (B, D, H, W) bool at the input's size
    and mask_probs (B, D, S, S), each detection's mask probabilities over its box (to paste at another size)."""

    boxes: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    detection_mask: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    mask_probs: torch.Tensor | None = None


@dataclass
class GenerativeOutput(Output):
    """A generative model's Output: `parts` names the loss's parts (per-sample means over the batch, detached), e.g.
    a VAE's recon and kl, which evaluation averages and logs beside the loss."""

    parts: dict[str, torch.Tensor] | None = None
