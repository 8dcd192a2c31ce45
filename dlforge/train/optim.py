"""Optimizers, parameter groups and learning-rate schedules, all picked by name from `TrainConfig`.

    optimizer = build_optimizer(model, cfg.train)
    schedule = build_schedule(optimizer, cfg.train, total_steps=1000)
    ...
    optimizer.step()
    schedule.step()            # once per optimizer step actually taken
    schedule.on_eval(val_loss)  # after each evaluation; only 'plateau' listens

Weight decay follows nanoGPT: matrices (Linear, conv and embedding weights) decay; biases, other 1-D parameters and
every parameter of a norm layer do not. Everything else comes from torch: `torch.optim` for the optimizers and
`torch.optim.lr_scheduler` for the schedules, with warmup + cosine / linear / constant as one `LambdaLR`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.optim import lr_scheduler

from dlforge.config import TrainConfig
from dlforge.errors import ConfigError
from dlforge.layers.norms import is_norm

OPTIMIZERS = ("sgd", "adam", "adamw", "adagrad", "rmsprop")
SCHEDULERS = ("constant", "step", "multistep", "exponential", "cosine", "linear", "onecycle", "plateau")
WARMUP_SCHEDULERS = ("constant", "cosine", "linear", "onecycle")
LAMBDA_SCHEDULERS = ("constant", "cosine", "linear")  # built as one LambdaLR from `_lr_factor`

# The keys that decide the lr of each step and what a step is (its samples: the seed draws the data order). Changed
# on resume, they bend a schedule already under way: a 2000-step cosine resumed as a 100-step one drops its lr at
# once. The run's length counts for the schedules that decay over it (LENGTH_SCHEDULERS); a constant or step-decay
# run may be extended.
SCHEDULE_KEYS = ("batch_size", "grad_accum", "seed", "optimizer", "lr", "scheduler", "warmup_steps", "min_lr",
                 "step_size", "milestones", "gamma", "plateau_patience")
LENGTH_KEYS = ("max_steps", "max_epochs")
LENGTH_SCHEDULERS = ("cosine", "linear", "onecycle")

# What a schedule's state_dict keeps: the progress, never the settings (those are rebuilt from the config, and a
# LambdaLR's functions or a MultiStepLR's Counter would not survive JSON anyway).
_PROGRESS_KEYS = ("last_epoch", "_step_count", "base_lrs", "_last_lr")
_PLATEAU_PROGRESS_KEYS = ("last_epoch", "_last_lr", "best", "num_bad_epochs", "cooldown_counter")


# --- optimizers ------------------------------------------------------------------------------------------------


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split trainable parameters into a "decay" group (ndim >= 2 outside norm layers) and a "no_decay" group.

    Biases, all other 1-D parameters and every parameter of a norm layer (see `is_norm`) go without decay; 2-D
    embedding tables decay, as in nanoGPT. Shared (tied) parameters are listed once; empty groups are left out.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if p.ndim >= 2 and not is_norm(module):
                decay.append(p)
            else:
                no_decay.append(p)
    if weight_decay == 0:  # one group, in the model's own parameter order: one optimizer pass per step, not two
        chosen = {id(p) for p in decay + no_decay}
        params = [p for p in model.parameters() if id(p) in chosen]
        return [{"name": "all", "params": params, "weight_decay": 0.0}] if params else []
    groups = [
        {"name": "decay", "params": decay, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def scale_groups(model: nn.Module, groups: list[dict[str, Any]], lr: float,
                 lr_scales: dict[str, float]) -> list[dict[str, Any]]:
    """Split each group by learning-rate multiplier: `lr_scales` maps a parameter-name prefix (a submodule path,
    e.g. "head", "stage1" or "blocks.3") to a multiple of `lr`, the longest matching prefix winning; parameters under
    no listed prefix keep 1x. Zero-scaled parameters are left out (frozen)."""
    scale_of: dict[int, float] = {}
    for name, p in model.named_parameters():  # a tied parameter, once: under the name it is first reached by
        prefixes = [k for k in lr_scales if name == k or name.startswith(k + ".")]
        scale_of[id(p)] = lr_scales[max(prefixes, key=len)] if prefixes else 1.0
    out = []
    for g in groups:
        by_scale: dict[float, list[nn.Parameter]] = {}
        for p in g["params"]:
            by_scale.setdefault(scale_of.get(id(p), 1.0), []).append(p)
        for scale, params in sorted(by_scale.items()):
            if scale > 0:
                out.append({**g, "name": f"{g['name']}@{scale:g}", "params": params, "lr": lr * scale})
    return out


def build_optimizer(model: nn.Module, cfg: TrainConfig, lr_scales: dict[str, float] | None = None
                    ) -> torch.optim.Optimizer:
    """The optimizer `cfg.optimizer` over `param_groups(model, cfg.weight_decay)`, with the config's hyperparameters.

    `lr_scales` (transfer learning) gives parts of the model their own multiple of `cfg.lr`; see `scale_groups`.
    """
    if cfg.nesterov and cfg.optimizer != "sgd":
        raise ConfigError(f"train.nesterov: only used by optimizer 'sgd', not {cfg.optimizer!r}")
    if cfg.nesterov and cfg.momentum <= 0:
        raise ConfigError("train.nesterov: needs train.momentum > 0")
    groups = param_groups(model, cfg.weight_decay)
    if lr_scales:
        groups = scale_groups(model, groups, cfg.lr, lr_scales)
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
    if cfg.optimizer == "adagrad":
        return torch.optim.Adagrad(groups, lr=cfg.lr)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, momentum=cfg.momentum)
    raise ConfigError(f"train.optimizer: unknown {cfg.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")


# --- schedules -------------------------------------------------------------------------------------------------


class Schedule:
    """One learning-rate schedule the Trainer drives the same way whatever its kind.

    `step()` after every optimizer step taken, `on_eval(value)` after every evaluation (only 'plateau' uses it).
    `state_dict()` holds plain numbers and lists (JSON-able), so a resumed run continues the same trajectory.
    """

    def __init__(self, name: str, scheduler: lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau,
                 total_steps: int):
        self.name = name
        self.scheduler = scheduler
        self.total_steps = total_steps

    def step(self) -> None:
        """Advance one optimizer step."""
        if self.name == "plateau":
            return
        if self.name == "onecycle" and self.scheduler.last_epoch >= self.total_steps:
            return  # OneCycleLR raises past its last step; hold the final lr instead
        self.scheduler.step()

    def on_eval(self, value: float) -> None:
        """Report the monitored metric after an evaluation; 'plateau' decays after `plateau_patience` bad ones."""
        if self.name == "plateau":
            self.scheduler.step(float(value))

    def get_last_lr(self) -> list[float]:
        """The current learning rate of each parameter group."""
        return [float(lr) for lr in self.scheduler.get_last_lr()]

    def state_dict(self) -> dict[str, Any]:
        """The schedule's progress: its name and the torch scheduler's counters and current lrs."""
        keys = _PLATEAU_PROGRESS_KEYS if self.name == "plateau" else _PROGRESS_KEYS
        full = self.scheduler.state_dict()
        return {"scheduler": self.name, "state": {k: full[k] for k in keys}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore progress saved by `state_dict()`, and set the optimizer's lrs to the saved ones."""
        if state.get("scheduler") != self.name:
            raise ConfigError(
                f"train.scheduler: the checkpoint was trained with {state.get('scheduler')!r}, the config says "
                f"{self.name!r}"
            )
        full = self.scheduler.state_dict()  # settings from the config, progress from the checkpoint
        full.update(state["state"])
        self.scheduler.load_state_dict(full)
        # Chainable schedulers (step, multistep, exponential) read the lr from the optimizer: put it back too.
        for group, lr in zip(self.scheduler.optimizer.param_groups, self.scheduler.get_last_lr(), strict=True):
            group["lr"] = lr


def fit_warmup(cfg: TrainConfig, total_steps: int) -> tuple[TrainConfig, str]:
    """The config with a warmup at least as long as the run (a preset shortened with train.max_steps or --quick)
    scaled down to a tenth of the run, and a line that says so; the config unchanged and "" otherwise."""
    if cfg.scheduler not in WARMUP_SCHEDULERS or cfg.warmup_steps < total_steps:
        return cfg, ""
    warmup = total_steps // 10
    note = (f"train.warmup_steps {cfg.warmup_steps} is not shorter than the run ({total_steps} steps): warming up "
            f"over {warmup} steps instead")
    return cfg.model_copy(update={"warmup_steps": warmup}), note


def schedule_changes(old: TrainConfig, new: TrainConfig) -> list[str]:
    """`train.KEY OLD -> NEW` for each schedule-defining key that differs between two configs of one run: the run's
    length first where its schedule decays over it, then `SCHEDULE_KEYS`."""
    keys = (LENGTH_KEYS if old.scheduler in LENGTH_SCHEDULERS else ()) + SCHEDULE_KEYS
    return [f"train.{key} {getattr(old, key)} -> {getattr(new, key)}" for key in keys
            if getattr(old, key) != getattr(new, key)]


def build_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int,
                   monitor_mode: str = "min") -> Schedule:
    """The schedule `cfg.scheduler` over `total_steps` optimizer steps.

    constant, cosine and linear start with a linear warmup over `warmup_steps` (from lr / (warmup_steps + 1) up to
    lr, as in nanoGPT), then hold lr or decay it to `min_lr` at `total_steps`. step, multistep and exponential
    multiply lr by `gamma` (every `step_size` steps, at each of `milestones`, every step); onecycle is torch's
    OneCycleLR peaking at lr after `warmup_steps` (30% of the run if 0); plateau multiplies lr by `gamma` after
    `plateau_patience` evaluations without improvement of the monitored value (`monitor_mode` "min" or "max").
    """
    name = cfg.scheduler
    _check_schedule(cfg, total_steps, monitor_mode)
    if name in LAMBDA_SCHEDULERS:
        warmup, decay_steps, floor = cfg.warmup_steps, total_steps - cfg.warmup_steps, cfg.min_lr / cfg.lr
        scheduler = lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, name, warmup, decay_steps, floor))
    elif name == "step":
        scheduler = lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    elif name == "multistep":
        scheduler = lr_scheduler.MultiStepLR(optimizer, milestones=cfg.milestones, gamma=cfg.gamma)
    elif name == "exponential":
        scheduler = lr_scheduler.ExponentialLR(optimizer, gamma=cfg.gamma)
    elif name == "onecycle":
        pct_start = cfg.warmup_steps / total_steps if cfg.warmup_steps else 0.3
        peaks = [g.get("lr", cfg.lr) for g in optimizer.param_groups]  # per group: transfer's backbone runs lower
        scheduler = lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=total_steps, pct_start=pct_start,
                                            cycle_momentum=_has_momentum(optimizer))
    elif name == "plateau":
        scheduler = lr_scheduler.ReduceLROnPlateau(optimizer, mode=monitor_mode, factor=cfg.gamma,
                                                   patience=cfg.plateau_patience)
    else:
        raise ConfigError(f"train.scheduler: unknown {name!r}; expected one of {', '.join(SCHEDULERS)}")
    return Schedule(name, scheduler, total_steps)


def _check_schedule(cfg: TrainConfig, total_steps: int, monitor_mode: str) -> None:
    name = cfg.scheduler
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if monitor_mode not in ("min", "max"):
        raise ValueError(f"monitor_mode must be 'min' or 'max', got {monitor_mode!r}")
    if cfg.min_lr > cfg.lr:
        raise ConfigError(f"train.min_lr: {cfg.min_lr} is above train.lr {cfg.lr}; expected min_lr <= lr")
    if cfg.warmup_steps and name not in WARMUP_SCHEDULERS:
        raise ConfigError(
            f"train.warmup_steps: not used by scheduler {name!r}; use cosine, linear, constant or onecycle"
        )
    if cfg.warmup_steps >= total_steps and name in ("cosine", "linear", "onecycle"):
        raise ConfigError(f"train.warmup_steps: {cfg.warmup_steps} leaves no room to decay in {total_steps} steps; "
                          f"expected fewer than {total_steps}")
    if name == "multistep" and not cfg.milestones:
        raise ConfigError("train.milestones: empty; scheduler 'multistep' needs the steps to decay at, e.g. [500, 800]")
    if name == "plateau" and cfg.gamma >= 1:
        raise ConfigError(f"train.gamma: scheduler 'plateau' needs a factor below 1, got {cfg.gamma}")


def _lr_factor(step: int, name: str, warmup: int, decay_steps: int, floor: float) -> float:
    """Multiplier of the peak lr after `step` optimizer steps: linear warmup, then constant, cosine or linear."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if name == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, decay_steps))  # 0 -> 1 over the decay, then held at the floor
    if name == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return floor + (1 - floor) * (1 - progress)


def _has_momentum(optimizer: torch.optim.Optimizer) -> bool:
    # OneCycleLR cycles momentum (or Adam's beta1) inversely to lr; only where the optimizer has one in use.
    return "betas" in optimizer.defaults or optimizer.defaults.get("momentum", 0) > 0
