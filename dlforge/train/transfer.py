"""Transfer learning: another run's backbone, a new head, a frozen prefix, and a lower backbone learning rate.

    train:
      transfer: {init_from: runs/fashion-pretrain5-..., freeze: stage2, backbone_lr: 0.1}

A model that supports transfer names its stages in forward order in `stage_names`, the last being `head` (its
classifier): top-level children (`stem`, `stage1`...) or dotted submodule paths (a Transformer's `blocks.0`,
`blocks.1`...). Everything before `head` is the backbone. `load_backbone` copies every backbone tensor from
the source model (same architecture; the head may differ in its number of classes) and leaves the new head as
initialized. `freeze` stops gradients through a prefix of the stages, and turns the batch norms there into
`FrozenBatchNorm2d`, which normalize with the pretrained statistics in training as in evaluation (a frozen stage
should compute the same features it was trained to compute, whatever the new batches look like).

Learning rates: the head trains at `train.lr`, the backbone at `backbone_lr` times that; with `layer_decay` (layer-wise
learning-rate decay, Howard & Ruder 2018; Clark et al. 2020) each backbone stage gets `layer_decay` times the rate of
the stage after it, so the last stage before the head trains at backbone_lr and the first at
backbone_lr * layer_decay^(stages - 1): the general features low in the network move least.
"""

from __future__ import annotations

import torch
from torch import nn

from dlforge.config import TransferConfig
from dlforge.errors import ConfigError

HEAD = "head"


def stage_names(model: nn.Module) -> list[str]:
    names = list(getattr(model, "stage_names", []) or [])
    if not names or names[-1] != HEAD:
        raise ConfigError(f"train.transfer: model {type(model).__name__} has no stage_names ending in 'head'; "
                          "transfer learning needs a model with a named backbone and head (e.g. the CNNs)")
    return names


def load_backbone(model: nn.Module, source: nn.Module) -> list[str]:
    """Copy every backbone tensor of `source` into `model`; return the keys copied. The heads are not touched."""
    stage_names(model)
    backbone = [k for k in model.state_dict() if not k.startswith(HEAD + ".")]
    return copy_weights(model, source, backbone, "train.transfer.init_from", "backbone tensor",
                        getattr(model, "backbone_type", type(model)))


def load_all(model: nn.Module, source: nn.Module, where: str = "train.init_from") -> list[str]:
    """Copy every tensor of `source` into `model` (continued pretraining, fine-tuning): the same architecture and
    shapes, and no tensor of the source left behind."""
    extra = sorted(set(source.state_dict()) - set(model.state_dict()))
    if extra:
        raise ConfigError(f"{where}: the source has {extra[0]!r}, which this model has not; the model config must "
                          "match the source's")
    return copy_weights(model, source, list(model.state_dict()), where, "tensor")


def copy_weights(model: nn.Module, source: nn.Module, keys: list[str], where: str, what: str,
                 source_type: type | None = None) -> list[str]:
    """Copy the tensors `keys` of `source` into `model`, after checking the architecture and every shape. The source
    must be a `source_type` (default: the model's own type; a detector takes a classifier's backbone by naming its
    class in `backbone_type`)."""
    expected = source_type or type(model)
    if type(source) is not expected:
        raise ConfigError(f"{where}: holds a {type(source).__name__}, this run builds a {type(model).__name__}; it "
                          f"must be a {expected.__name__}")
    own, theirs = model.state_dict(), source.state_dict()
    for key in keys:
        if key not in theirs or theirs[key].shape != own[key].shape:
            got = tuple(theirs[key].shape) if key in theirs else "missing"
            raise ConfigError(f"{where}: {what} {key!r} is {got} in the source, {tuple(own[key].shape)} here; change "
                              "the model config to match the source run")
    model.load_state_dict({**own, **{k: theirs[k] for k in keys}})
    return keys


def freeze(model: nn.Module, upto: str) -> list[str]:
    """Freeze the stages up to and including `upto` ('all': every stage but the head; 'none': nothing)."""
    names = stage_names(model)
    if upto == "none":
        return []
    if upto == "all":
        frozen = names[:-1]
    elif upto in names[:-1]:
        frozen = names[: names.index(upto) + 1]
    else:
        raise ConfigError(f"train.transfer.freeze: {upto!r} is not a stage of {type(model).__name__}; "
                          f"expected none, all or one of {', '.join(names[:-1])}")
    for name in frozen:
        stage = model.get_submodule(name)
        for p in stage.parameters():
            p.requires_grad_(False)
        _freeze_batchnorm(stage)
    return frozen


def lr_scales(model: nn.Module, cfg: TransferConfig) -> dict[str, float]:
    """Learning-rate multiplier per stage (a parameter-name prefix): the head 1, the backbone `backbone_lr`, decayed
    by `layer_decay` per stage from the last backbone stage down when that is set."""
    backbone = stage_names(model)[:-1]
    decay = 1.0 if cfg.layer_decay is None else cfg.layer_decay
    scales = {name: cfg.backbone_lr * decay ** (len(backbone) - 1 - i) for i, name in enumerate(backbone)}
    return {**scales, HEAD: 1.0}


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters: y = (x - mean) / sqrt(var + eps) * w + b.

    It keeps BatchNorm2d's state-dict keys, so a model folder saved with it loads into the plain architecture.
    """

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        self.eps = bn.eps
        n = bn.num_features
        for name, default in (("weight", torch.ones(n)), ("bias", torch.zeros(n)),
                              ("running_mean", torch.zeros(n)), ("running_var", torch.ones(n))):
            value = getattr(bn, name)
            self.register_buffer(name, (value if value is not None else default).detach().clone())
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]


def _freeze_batchnorm(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, FrozenBatchNorm2d(child))
        else:
            _freeze_batchnorm(child)
