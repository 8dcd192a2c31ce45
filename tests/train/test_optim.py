"""Optimizers, parameter groups and schedules: grouping rules, hyperparameters, parity with torch and closed forms."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler

from dlforge.config import TrainConfig
from dlforge.errors import ConfigError
from dlforge.train.optim import (
    SCHEDULERS,
    Schedule,
    build_optimizer,
    build_schedule,
    param_groups,
    schedule_changes,
)

LR = 0.1


def train_cfg(**overrides) -> TrainConfig:
    return TrainConfig(max_steps=100, lr=LR, **overrides)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.fc1 = nn.Linear(8, 16)
        self.ln = nn.LayerNorm(16)
        self.fc2 = nn.Linear(16, 4)
        self.bn = nn.BatchNorm1d(4)
        self.ln2d = nn.LayerNorm((4, 8))  # a norm with a 2-D weight: exempt because of its module, not its shape
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def sgd(lr: float = LR) -> torch.optim.Optimizer:
    return torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=lr, momentum=0.9)


def trajectory(schedule: Schedule, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    """The lr used by each of `steps` optimizer steps."""
    lrs = []
    for _ in range(steps):
        lrs.append(schedule.get_last_lr()[0])
        assert optimizer.param_groups[0]["lr"] == pytest.approx(lrs[-1], rel=1e-12)
        optimizer.step()
        schedule.step()
    return lrs


def torch_trajectory(scheduler: lr_scheduler.LRScheduler, steps: int) -> list[float]:
    lrs = []
    for _ in range(steps):
        lrs.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return lrs


# --- parameter groups ------------------------------------------------------------------------------------------


def test_param_groups_exempt_biases_and_norms():
    model = Tiny()
    groups = {g["name"]: g for g in param_groups(model, weight_decay=0.1)}
    decay = {id(p) for p in groups["decay"]["params"]}
    no_decay = {id(p) for p in groups["no_decay"]["params"]}

    assert decay == {id(model.embed.weight), id(model.fc1.weight), id(model.fc2.weight)}
    for p in [model.fc1.bias, model.fc2.bias, model.ln.weight, model.ln.bias, model.bn.weight, model.bn.bias,
              model.ln2d.weight, model.ln2d.bias]:
        assert id(p) in no_decay
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(decay) + len(no_decay) == len(trainable)
    assert not decay & no_decay
    assert groups["decay"]["weight_decay"] == 0.1
    assert groups["no_decay"]["weight_decay"] == 0.0


def test_param_groups_skip_empty_and_list_tied_weights_once():
    assert [g["name"] for g in param_groups(nn.LayerNorm(4), 0.1)] == ["no_decay"]
    model = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5, bias=False))
    model[1].weight = model[0].weight  # tied input and output embeddings, as in GPT
    (group,) = param_groups(model, 0.1)
    assert group["name"] == "decay" and len(group["params"]) == 1


# --- optimizers ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls", "expected"),
    [
        ("sgd", torch.optim.SGD, {"momentum": 0.8, "nesterov": True}),
        ("adam", torch.optim.Adam, {"betas": (0.8, 0.95)}),
        ("adamw", torch.optim.AdamW, {"betas": (0.8, 0.95)}),
        ("adagrad", torch.optim.Adagrad, {}),
        ("rmsprop", torch.optim.RMSprop, {"momentum": 0.8}),
    ],
)
def test_build_optimizer(name, cls, expected):
    cfg = train_cfg(optimizer=name, weight_decay=0.05, momentum=0.8, betas=(0.8, 0.95), nesterov=name == "sgd")
    model = Tiny()
    optimizer = build_optimizer(model, cfg)
    assert type(optimizer) is cls
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["decay"]["weight_decay"] == 0.05 and groups["no_decay"]["weight_decay"] == 0.0
    for group in groups.values():
        assert group["lr"] == LR
        for key, value in expected.items():
            assert group[key] == value
    # The extra "name" key does not get in the way of a real step.
    model.fc2(model.fc1(torch.randn(3, 8))).sum().backward()
    before = model.fc1.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, model.fc1.weight)


def test_nesterov_errors():
    with pytest.raises(ConfigError, match=r"^train\.nesterov: needs train\.momentum > 0$"):
        build_optimizer(Tiny(), train_cfg(optimizer="sgd", nesterov=True, momentum=0.0))
    with pytest.raises(ConfigError, match="train.nesterov: only used by optimizer 'sgd'"):
        build_optimizer(Tiny(), train_cfg(optimizer="adamw", nesterov=True))


# --- schedules: closed forms -----------------------------------------------------------------------------------


def warmup_lr(step: int, warmup: int) -> float:
    return LR * (step + 1) / (warmup + 1)


def test_constant():
    optimizer = sgd()
    assert trajectory(build_schedule(optimizer, train_cfg(), 100), optimizer, 100) == [LR] * 100


def test_constant_with_warmup():
    optimizer = sgd()
    lrs = trajectory(build_schedule(optimizer, train_cfg(warmup_steps=10), 100), optimizer, 100)
    assert lrs == pytest.approx([warmup_lr(k, 10) for k in range(10)] + [LR] * 90, rel=1e-12)


@pytest.mark.parametrize("name", ["cosine", "linear", "constant", "onecycle"])
def test_warmup_starts_near_zero_and_reaches_lr(name):
    optimizer = sgd()
    lrs = trajectory(build_schedule(optimizer, train_cfg(scheduler=name, warmup_steps=20), 100), optimizer, 21)
    assert lrs[0] < 0.05 * LR
    assert all(a < b for a, b in zip(lrs[:19], lrs[1:20], strict=True))
    assert max(lrs) == pytest.approx(LR, rel=1e-9)
    assert lrs[20 if name != "onecycle" else 19] == pytest.approx(LR, rel=1e-9)  # OneCycleLR peaks one step early


@pytest.mark.parametrize("name", ["cosine", "linear"])
def test_decay_matches_closed_form(name):
    warmup, total, min_lr = 10, 100, 0.01
    optimizer = sgd()
    schedule = build_schedule(optimizer, train_cfg(scheduler=name, warmup_steps=warmup, min_lr=min_lr), total)
    lrs = trajectory(schedule, optimizer, total + 10)

    def expected(step: int) -> float:
        if step < warmup:
            return warmup_lr(step, warmup)
        progress = min(1.0, (step - warmup) / (total - warmup))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if name == "cosine" else 1 - progress
        return min_lr + (LR - min_lr) * shape

    assert lrs == pytest.approx([expected(k) for k in range(total + 10)], rel=1e-9)
    assert lrs[warmup] == pytest.approx(LR) and lrs[total:] == pytest.approx([min_lr] * 10)


# --- schedules: parity with torch schedulers driven directly -----------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "reference"),
    [
        ({"scheduler": "step", "step_size": 15, "gamma": 0.5}, lambda o: lr_scheduler.StepLR(o, 15, gamma=0.5)),
        ({"scheduler": "multistep", "milestones": [10, 40, 41], "gamma": 0.3},
         lambda o: lr_scheduler.MultiStepLR(o, [10, 40, 41], gamma=0.3)),
        ({"scheduler": "exponential", "gamma": 0.97}, lambda o: lr_scheduler.ExponentialLR(o, gamma=0.97)),
        ({"scheduler": "onecycle"}, lambda o: lr_scheduler.OneCycleLR(o, LR, total_steps=100)),
        ({"scheduler": "onecycle", "warmup_steps": 10},
         lambda o: lr_scheduler.OneCycleLR(o, LR, total_steps=100, pct_start=0.1)),
    ],
)
def test_parity_with_torch(overrides, reference):
    optimizer = sgd()
    ours = trajectory(build_schedule(optimizer, train_cfg(**overrides), 100), optimizer, 100)
    theirs = torch_trajectory(reference(sgd()), 100)
    assert ours == pytest.approx(theirs, rel=1e-12)


def test_onecycle_holds_its_last_lr_past_total_steps():
    optimizer = sgd()
    schedule = build_schedule(optimizer, train_cfg(scheduler="onecycle"), 50)
    lrs = trajectory(schedule, optimizer, 60)  # torch's OneCycleLR would raise on step 51
    assert lrs[50:] == [lrs[50]] * 10


def test_onecycle_leaves_momentum_alone_without_momentum():
    optimizer = torch.optim.Adagrad(nn.Linear(2, 2).parameters(), lr=LR)  # no momentum to cycle
    trajectory(build_schedule(optimizer, train_cfg(scheduler="onecycle"), 100), optimizer, 10)


# --- plateau ---------------------------------------------------------------------------------------------------


def test_plateau_reduces_after_patience():
    optimizer = sgd()
    schedule = build_schedule(optimizer, train_cfg(scheduler="plateau", gamma=0.5, plateau_patience=2), 100)
    trajectory(schedule, optimizer, 5)  # step() alone never changes the lr
    assert schedule.get_last_lr() == [LR]
    schedule.on_eval(1.0)  # the best so far
    for _ in range(2):  # `patience` evaluations without improvement are tolerated
        schedule.on_eval(1.0)
        assert schedule.get_last_lr() == [LR]
    schedule.on_eval(1.0)
    assert schedule.get_last_lr() == pytest.approx([LR * 0.5])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(LR * 0.5)


@pytest.mark.parametrize(("mode", "reduced"), [("max", False), ("min", True)])
def test_plateau_mode(mode, reduced):
    optimizer = sgd()
    schedule = build_schedule(optimizer, train_cfg(scheduler="plateau", plateau_patience=1), 100, monitor_mode=mode)
    for value in [0.1, 0.2, 0.3, 0.4, 0.5]:  # rising: improving for accuracy, worsening for loss
        schedule.on_eval(value)
    assert (schedule.get_last_lr()[0] < LR) is reduced


# --- state ------------------------------------------------------------------------------------------------------

ROUND_TRIP_CONFIGS = {
    "constant": {"warmup_steps": 40},
    "step": {"step_size": 15},
    "multistep": {"milestones": [10, 40, 50]},
    "exponential": {"gamma": 0.97},
    "cosine": {"warmup_steps": 10, "min_lr": 0.001},
    "linear": {"warmup_steps": 10},
    "onecycle": {"warmup_steps": 20},
    "plateau": {"gamma": 0.5, "plateau_patience": 1},
}


@pytest.mark.parametrize("name", SCHEDULERS)
def test_state_dict_round_trip_through_json(name):
    cfg = train_cfg(scheduler=name, **ROUND_TRIP_CONFIGS[name])
    evals = iter([1.0, 0.9, 0.95, 0.97, 0.99, 0.8, 0.85, 0.86, 0.87, 0.88] * 10)

    def advance(schedule: Schedule, optimizer: torch.optim.Optimizer, steps: int, values) -> list[float]:
        lrs = []
        for step in range(steps):
            optimizer.step()
            schedule.step()
            if step % 3 == 0:
                schedule.on_eval(next(values))
            lrs.append(schedule.get_last_lr()[0])
        return lrs

    first_optimizer = sgd()
    first = build_schedule(first_optimizer, cfg, 100)
    advance(first, first_optimizer, 37, evals)
    state = json.loads(json.dumps(first.state_dict()))

    second_optimizer = sgd()  # fresh: its lr comes back from the schedule's state alone
    second = build_schedule(second_optimizer, cfg, 100)
    second.load_state_dict(state)
    assert second.get_last_lr() == first.get_last_lr()
    assert second_optimizer.param_groups[0]["lr"] == first_optimizer.param_groups[0]["lr"]

    values = list(evals)[:20]
    assert advance(second, second_optimizer, 20, iter(values)) == advance(first, first_optimizer, 20, iter(values))
    if name in ("multistep", "plateau", "onecycle", "cosine"):  # the continuation really moves the lr
        assert first.get_last_lr() != state["state"]["_last_lr"]


def test_state_from_another_scheduler_is_refused():
    state = build_schedule(sgd(), train_cfg(scheduler="cosine"), 100).state_dict()
    with pytest.raises(ConfigError, match="train.scheduler: the checkpoint was trained with 'cosine'"):
        build_schedule(sgd(), train_cfg(scheduler="linear"), 100).load_state_dict(state)


# --- errors -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["step", "multistep", "exponential", "plateau"])
def test_warmup_with_a_scheduler_that_ignores_it(name):
    cfg = train_cfg(scheduler=name, warmup_steps=10, milestones=[50])
    message = f"train.warmup_steps: not used by scheduler '{name}'; use cosine, linear, constant or onecycle"
    with pytest.raises(ConfigError) as info:
        build_schedule(sgd(), cfg, 100)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"scheduler": "cosine", "min_lr": 0.5}, r"train\.min_lr: 0\.5 is above train\.lr 0\.1"),
        ({"scheduler": "cosine", "warmup_steps": 100}, r"train\.warmup_steps: 100 leaves no room to decay"),
        ({"scheduler": "multistep"}, r"train\.milestones: empty"),
        ({"scheduler": "plateau", "gamma": 1.5}, r"train\.gamma: scheduler 'plateau' needs a factor below 1"),
    ],
)
def test_schedule_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        build_schedule(sgd(), train_cfg(**overrides), 100)


def test_schedule_changes_name_the_keys_that_bend_a_resumed_schedule():
    # issue 13, defect 12: train.max_steps=100 on a 2000-step cosine run dropped the lr from 2e-3 to 2.6e-4 at once
    cosine = TrainConfig(scheduler="cosine", max_steps=2000, lr=2e-3, warmup_steps=50)
    shorter = cosine.model_copy(update={"max_steps": 100, "batch_size": 64, "seed": 1, "log_every": 5, "device": "cpu"})
    assert schedule_changes(cosine, shorter) == ["train.max_steps 2000 -> 100", "train.batch_size 32 -> 64",
                                                 "train.seed 0 -> 1"]
    assert schedule_changes(cosine, cosine.model_copy(update={"eval_every": 7, "progress": False})) == []
    constant = TrainConfig(scheduler="constant", max_steps=2000, lr=0.1)
    assert schedule_changes(constant, constant.model_copy(update={"max_steps": 4000})) == []  # extending is fine
    assert schedule_changes(constant, constant.model_copy(update={"lr": 0.5})) == ["train.lr 0.1 -> 0.5"]
