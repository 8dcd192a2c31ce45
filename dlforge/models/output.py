"""The one model contract: `forward(batch) -> Output`."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Output:
    """What every model returns. `loss` is set when the batch carried targets; the Trainer never builds a loss."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
