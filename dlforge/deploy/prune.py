"""Pruning: magnitude masks (unstructured) or whole channels removed (structured), then fine-tuning by the Trainer.

    train:
      init_from: runs/fashion-mlp-...
      prune: {sparsity: 0.9, scope: global, schedule: gradual, every: 50}

Unstructured (Han et al. 2015): every Conv2d and Linear weight gets a `weight_mask` buffer; the weights of smallest
magnitude are masked, over all layers at once (`scope: global`, one threshold) or per layer (`scope: layer`, the same
sparsity in each). `oneshot` prunes to the full sparsity before the first step; `gradual` raises it along Zhu &
Gupta's cubic schedule s_t = s_f (1 - (1 - (t - t0) / (t1 - t0))^3), every `every` steps from `start_step` to
`end_step`, so the network adapts while it loses weights. After every optimizer step the masked weights are set
back to zero (the `Pruner` callback runs before any other: checkpoints, the EMA and evaluation see pruned weights).
The masks are buffers, so a checkpoint holds them and a killed run resumes with the same ones. The final model
folder has the masks applied and removed: a plain model whose zeros are the pruning, and which is no smaller on
disk nor faster in a dense runtime; the report says so and what sparse storage would take.

Structured (`structured: true`, `dlforge.deploy.channels`): the channels are removed from the init_from model before
training, chosen again the same way on a resume (the choice depends on the source weights alone); the model folder
records it in pruning.json, from which `dlforge.artifacts.load_model` rebuilds the smaller layers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dlforge.config import PruneConfig
from dlforge.errors import ConfigError
from dlforge.train.callbacks import Callback

MASK = "weight_mask"
PRUNING_FILE = "pruning.json"


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers whose weights unstructured pruning masks: every Conv2d and Linear, by name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


def add_masks(model: nn.Module) -> None:
    """Give every prunable layer an all-ones mask (filled by `update_masks`, or by a checkpoint on a resume)."""
    layers = prunable_layers(model)
    if not layers:
        raise ConfigError(f"train.prune: {type(model).__name__} has no Conv2d or Linear layer to prune")
    for m in layers.values():
        m.register_buffer(MASK, torch.ones_like(m.weight, dtype=torch.bool))


def update_masks(model: nn.Module, sparsity: float, scope: str) -> None:
    """Mask the `sparsity` fraction of smallest-magnitude weights (those masked already stay masked: their weights
    are zero), over all layers (`global`) or in each layer (`layer`); then zero the masked weights."""
    layers = [m for m in prunable_layers(model).values() if hasattr(m, MASK)]
    with torch.no_grad():
        if scope == "global":
            magnitudes = torch.cat([m.weight.detach().abs().flatten().float() for m in layers])
            threshold = _kth(magnitudes, sparsity)
            for m in layers:
                _narrow(m, m.weight.detach().abs().float() > threshold)
        else:
            for m in layers:
                magnitude = m.weight.detach().abs().float()
                _narrow(m, magnitude > _kth(magnitude.flatten(), sparsity))
        apply_masks(model)


def _kth(values: torch.Tensor, sparsity: float) -> torch.Tensor:
    """The magnitude at or below which `sparsity` of `values` lie (-1 when none is to go)."""
    k = int(round(sparsity * values.numel()))
    return torch.kthvalue(values.cpu(), k).values.to(values.device) if k > 0 else values.new_tensor(-1.0)


def _narrow(m: nn.Module, keep: torch.Tensor) -> None:
    # ties at the threshold all go (exact zeros: those already masked), which can overshoot by the ties only
    getattr(m, MASK).copy_(keep & getattr(m, MASK))


def apply_masks(model: nn.Module) -> None:
    with torch.no_grad():
        for m in prunable_layers(model).values():
            mask = getattr(m, MASK, None)
            if mask is not None:
                m.weight.mul_(mask)


def strip_masks(model: nn.Module) -> None:
    """Apply the masks for good and remove them: the model's state dict is the plain architecture's again."""
    apply_masks(model)
    for m in prunable_layers(model).values():
        m._buffers.pop(MASK, None)


def sparsity_at(cfg: PruneConfig, step: int, max_steps: int | None) -> float:
    """The target sparsity after `step` optimizer steps (Zhu & Gupta's cubic ramp for `gradual`)."""
    if cfg.schedule == "oneshot":
        return cfg.sparsity
    if step < cfg.start_step:
        return 0.0
    progress = min(1.0, (step - cfg.start_step) / (end_step(cfg, max_steps) - cfg.start_step))
    return cfg.sparsity * (1 - (1 - progress) ** 3)


def end_step(cfg: PruneConfig, max_steps: int | None) -> int:
    """The step at which gradual pruning reaches the full sparsity (default: 3/4 of the run)."""
    end = cfg.end_step if cfg.end_step is not None else int(0.75 * (max_steps or 1))
    if end <= cfg.start_step:
        raise ConfigError(f"train.prune.end_step: {end}, not after train.prune.start_step {cfg.start_step}")
    return end


class Pruner(Callback):
    """Keeps the masked weights at zero after every step, and updates the masks on the schedule. First in the list."""

    rank_zero_only = False  # every DDP rank holds the model

    def __init__(self, cfg: PruneConfig):
        self.cfg = cfg

    def on_fit_start(self, trainer) -> None:
        if trainer.step == 0:  # a resume has its masks from the checkpoint
            self._update(trainer)

    def on_step_end(self, trainer, logs: dict[str, float]) -> None:
        c, t = self.cfg, trainer.step
        if c.schedule == "gradual" and c.start_step <= t <= end_step(c, trainer.max_steps) + c.every and \
                (t - c.start_step) % c.every == 0:
            self._update(trainer)
        else:
            apply_masks(trainer.model)
        if logs:  # a logging step (the others' logs are empty)
            logs["sparsity"] = measured_sparsity(trainer.model)

    def _update(self, trainer) -> None:
        update_masks(trainer.model, sparsity_at(self.cfg, trainer.step, trainer.max_steps), self.cfg.scope)


def measured_sparsity(model: nn.Module) -> float:
    """The fraction of prunable weights that are zero."""
    layers = prunable_layers(model).values()
    total = sum(m.weight.numel() for m in layers)
    return sum(int((m.weight == 0).sum()) for m in layers) / max(1, total)


def prepare(model: nn.Module, cfg: PruneConfig, example: dict[str, torch.Tensor], has_source: bool
            ) -> dict[str, Any] | None:
    """Get `model` (with its source weights loaded) ready to prune: masks added, or channels removed (returns
    {first producer: {before, after}} per channel group; None for masks)."""
    if cfg.structured:
        if not has_source:
            raise ConfigError("train.prune.structured: needs train.init_from, the trained model whose channels to "
                              "remove")
        from dlforge.deploy.channels import prune_channels

        return prune_channels(model, example, cfg.sparsity)
    add_masks(model)
    return None


def finish(model: nn.Module, cfg: PruneConfig) -> dict[str, Any]:
    """Strip the masks before the model folder is written; return its pruning.json (what `load_model` reads to
    rebuild a structurally pruned model's layers)."""
    strip_masks(model)
    return {"structured": cfg.structured, "sparsity": cfg.sparsity, "scope": cfg.scope, "schedule": cfg.schedule,
            "zero_fraction": measured_sparsity(model)}
