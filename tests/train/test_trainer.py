"""The Trainer, one mechanic per test: each shows the mechanic does what it claims, against torch where possible."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from dlforge.config import TrainConfig, load_config
from dlforge.data.dataset import TensorDictDataset
from dlforge.errors import ConfigError, TrainingError
from dlforge.eval.metrics import TaskMetrics
from dlforge.models.output import Output
from dlforge.train.callbacks import Callback, EarlyStopping
from dlforge.train.distributed import resolve_device
from dlforge.train.optim import build_schedule
from dlforge.train.trainer import Trainer

# --- helpers -----------------------------------------------------------------------------------------------------


class Recorder(Callback):
    """Keeps the non-empty log rows, every `logs` argument, and every evaluation as (step, metrics)."""

    def __init__(self):
        self.logs: list[dict] = []
        self.every_step: list[dict] = []
        self.evals: list[tuple[int, dict]] = []

    def on_step_end(self, trainer, logs):
        self.every_step.append(dict(logs))
        if logs:
            self.logs.append(dict(logs))

    def on_eval_end(self, trainer, metrics):
        self.evals.append((trainer.step, dict(metrics)))


class Snapshots(Callback):
    """Everything a step may change, copied after every step: weights, optimizer, schedule, lr, AMP scale."""

    def __init__(self):
        self.at: dict[int, dict] = {}

    def on_step_end(self, trainer, logs):
        self.at[trainer.step] = {
            "params": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
            "optimizer": copy.deepcopy(trainer.optimizer.state_dict()),
            "schedule": copy.deepcopy(trainer.schedule.state_dict()),
            "lr": [g["lr"] for g in trainer.optimizer.param_groups],
            "scale": trainer.scaler.get_scale(),
            "skipped": trainer.skipped_steps,
        }


class StepCounter(Callback):
    """A callback with state: how many steps and evaluations it has seen."""

    def __init__(self):
        self.steps, self.evals = 0, 0

    def on_step_end(self, trainer, logs):
        self.steps += 1

    def on_eval_end(self, trainer, metrics):
        self.evals += 1

    def state_dict(self):
        return {"steps": self.steps, "evals": self.evals}

    def load_state_dict(self, state):
        self.steps, self.evals = state["steps"], state["evals"]


class Spy(nn.Module):
    """Wraps a model: records each training forward's inputs and logits dtype; poisons chosen calls' loss with NaN."""

    def __init__(self, inner: nn.Module, nan_calls: tuple[int, ...] = ()):
        super().__init__()
        self.inner = inner
        self.nan_calls = set(nan_calls)
        self.calls = 0
        self.batches: list[torch.Tensor] = []
        self.dtypes: list[torch.dtype] = []

    def forward(self, batch):
        out = self.inner(batch)
        if self.training:
            self.calls += 1
            self.batches.append(batch["x"].detach().clone())
            self.dtypes.append(out.logits.dtype)
            if self.calls in self.nan_calls:
                return Output(logits=out.logits, loss=out.loss * float("nan"))
        return out


class ZeroLoss(nn.Module):
    """Wraps a model so that every gradient is zero: what is left of an optimizer step is its weight decay."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, batch):
        out = self.inner(batch)
        return Output(logits=out.logits, loss=out.loss * 0.0)


class NoCheckpointing(nn.Module):
    """A model that follows the contract but does not declare activation-checkpointing support."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, batch):
        logits = self.linear(batch["x"])
        return Output(logits=logits, loss=nn.functional.cross_entropy(logits, batch["y"]))


def assert_params_close(a: nn.Module, b: nn.Module, atol: float) -> None:
    pa, pb = list(a.parameters()), list(b.parameters())
    assert len(pa) == len(pb)
    for i, (p, q) in enumerate(zip(pa, pb, strict=True)):
        torch.testing.assert_close(p, q, atol=atol, rtol=0.0, msg=lambda m, i=i: f"parameter {i}: {m}")


def assert_equal_nested(a, b, path: str = "state") -> None:
    """Tensors bit for bit, everything else by ==, all the way down."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_equal_nested(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_equal_nested(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


def big_targets(n: int = 32, scale: float = 1000.0) -> TensorDictDataset:
    """Regression rows whose targets are huge, so the first gradients are far above any small clip."""
    g = torch.Generator().manual_seed(1)
    return TensorDictDataset({"x": torch.randn(n, 4, generator=g), "y": scale * torch.randn(n, generator=g)})


# --- 1. gradient accumulation --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [64, 42])  # 42 = 16 + 16 + 10: a short last step batch, cut 2/3/3/2 into micro-batches
def test_gradient_accumulation_equals_one_big_batch(n, blobs, tiny_mlp, train_config):
    data = blobs(n)
    big, accumulated = tiny_mlp(), Spy(tiny_mlp())
    initial = copy.deepcopy(big.state_dict())
    common = {"max_steps": 8, "optimizer": "sgd", "lr": 0.1}
    t_big = Trainer(big, train_config(batch_size=16, grad_accum=1, **common), data)
    t_acc = Trainer(accumulated, train_config(batch_size=4, grad_accum=4, **common), data)
    t_big.fit()
    t_acc.fit()

    assert t_acc.steps_per_epoch == t_big.steps_per_epoch == math.ceil(n / 16)
    assert accumulated.calls == 4 * 8  # four micro-batches per optimizer step ...
    assert max(len(b) for b in accumulated.batches) == 4  # ... of at most batch_size rows
    assert changed(big.state_dict(), initial)
    assert_params_close(accumulated, big, atol=1e-6)


# --- 2. batch GD and SGD -------------------------------------------------------------------------------------------


def test_full_batch_is_one_step_per_epoch_and_batch_size_one_is_one_step_per_sample(blobs, tiny_mlp, train_config):
    data = blobs(12)
    full = Spy(tiny_mlp())
    t = Trainer(full, train_config(max_epochs=3, batch_size="full"), data)
    t.fit()
    assert t.steps_per_epoch == 1
    assert (t.step, t.epoch) == (3, 3)
    assert [len(b) for b in full.batches] == [12, 12, 12]

    single = Spy(tiny_mlp())
    t = Trainer(single, train_config(max_epochs=2, batch_size=1), data)
    t.fit()
    assert t.steps_per_epoch == len(data) == 12
    assert (t.step, t.epoch) == (24, 2)
    assert all(len(b) == 1 for b in single.batches)
    every_row = sorted(map(tuple, data.tensors["x"].tolist()))
    for epoch in range(2):  # each epoch visits every row exactly once
        seen = torch.cat(single.batches[12 * epoch:12 * (epoch + 1)])
        assert sorted(map(tuple, seen.tolist())) == every_row


# --- 3. parity with a plain torch loop -----------------------------------------------------------------------------


def test_full_batch_sgd_with_momentum_matches_a_plain_torch_loop(blobs, tiny_mlp, train_config):
    data = blobs(32)
    model = tiny_mlp()
    reference = copy.deepcopy(model)
    cfg = train_config(max_steps=10, batch_size="full", optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=0.0)
    Trainer(model, cfg, data).fit()

    optimizer = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9)
    for _ in range(10):
        optimizer.zero_grad()
        reference(data.tensors).loss.backward()
        optimizer.step()
    assert_params_close(model, reference, atol=1e-7)


# --- 4. weight decay groups ----------------------------------------------------------------------------------------


def test_weight_decay_applies_to_matrices_and_spares_biases_and_norms(blobs, tiny_mlp, train_config):
    model = tiny_mlp(hidden=[8, 8], norm="layernorm")
    lr, wd = 0.1, 0.1
    t = Trainer(ZeroLoss(model), train_config(max_steps=1, batch_size="full", optimizer="adamw", lr=lr,
                                              weight_decay=wd), blobs(16))
    matrices = {id(block.linear.weight) for block in model.blocks} | {id(model.head.weight)}
    groups = {g["name"]: g for g in t.optimizer.param_groups}
    assert {id(p) for p in groups["decay"]["params"]} == matrices
    assert {id(p) for p in groups["no_decay"]["params"]} == {id(p) for p in model.parameters()} - matrices
    assert groups["decay"]["weight_decay"] == wd
    assert groups["no_decay"]["weight_decay"] == 0.0

    before = copy.deepcopy(dict(model.named_parameters()))
    t.fit()
    # zero gradients: AdamW's step is its decoupled decay alone, p <- p * (1 - lr * wd), on matrices only
    for name, p in model.named_parameters():
        if id(p) in matrices:
            torch.testing.assert_close(p, before[name] * (1 - lr * wd), atol=1e-7, rtol=0)
        else:
            assert torch.equal(p, before[name]), name


# --- 5. gradient clipping ------------------------------------------------------------------------------------------


def test_clip_by_norm_logs_the_pre_clip_norm_and_steps_along_the_clipped_gradient(tiny_mlp, train_config):
    data = big_targets()
    model = tiny_mlp(loss="mse", out_features=1)
    reference = copy.deepcopy(model)
    lr, clip = 0.1, 1e-3
    recorder = Recorder()
    cfg = train_config(max_steps=1, batch_size="full", optimizer="sgd", momentum=0.0, lr=lr, grad_clip=clip)
    Trainer(model, cfg, data, callbacks=[recorder]).fit()

    reference(data.tensors).loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), clip)  # clips the gradients in place
    assert norm.item() > 100 * clip  # the clip really bites
    assert recorder.logs[0]["grad_norm"] == pytest.approx(norm.item(), rel=1e-5)
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q - lr * q.grad, atol=1e-7, rtol=0)


@pytest.mark.parametrize("log_every", [
    1000,  # step 2 is not a log step (the first and last are)
    1,
])
def test_clip_by_value_bounds_every_gradient_component(log_every, tiny_mlp, train_config):
    data = big_targets()
    model = tiny_mlp(loss="mse", out_features=1)
    reference = copy.deepcopy(model)
    lr, clip = 0.1, 1e-3
    cfg = train_config(max_steps=2, batch_size="full", optimizer="sgd", momentum=0.0, lr=lr, grad_clip=clip,
                       grad_clip_mode="value", log_every=log_every)
    steps = Snapshots()
    Trainer(model, cfg, data, callbacks=[steps]).fit()

    for step in (1, 2):
        reference.zero_grad()
        reference(data.tensors).loss.backward()
        assert any((q.grad.abs() > clip).any() for q in reference.parameters())  # some components are clipped
        with torch.no_grad():
            before = [q.clone() for q in reference.parameters()]
            for q in reference.parameters():
                q -= lr * q.grad.clamp(-clip, clip)
        for p, q, b in zip(steps.at[step]["params"].values(), reference.parameters(), before, strict=True):
            assert ((p - b).abs() <= lr * clip + 1e-7).all()
            torch.testing.assert_close(p, q, atol=1e-7, rtol=0)


# --- 6. schedules --------------------------------------------------------------------------------------------------


def test_the_schedule_drives_the_lr_of_every_step_and_the_log(blobs, tiny_mlp, train_config):
    cfg = train_config(max_steps=12, batch_size=8, optimizer="sgd", lr=0.1, min_lr=0.01, scheduler="cosine",
                       warmup_steps=3)
    recorder = Recorder()
    t = Trainer(tiny_mlp(), cfg, blobs(64), callbacks=[recorder])
    used: list[float] = []
    t.optimizer.register_step_pre_hook(lambda opt, args, kwargs: used.append(opt.param_groups[0]["lr"]))
    t.fit()

    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9)
    schedule = build_schedule(optimizer, cfg, total_steps=12)
    expected_used, expected_logged = [], []
    for _ in range(12):
        expected_used.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
        expected_logged.append(schedule.get_last_lr()[0])

    assert used == pytest.approx(expected_used, rel=1e-12)
    # the log row of step k carries the lr step k used (as Lightning logs it), not the next step's
    assert [row["lr"] for row in recorder.logs] == pytest.approx(expected_used, rel=1e-12)
    assert expected_logged[:-1] == pytest.approx(expected_used[1:], rel=1e-12)
    assert used[0] < used[3] == pytest.approx(0.1) and used[-1] < used[3]  # warms up, then decays


# --- 7. NaN policy -------------------------------------------------------------------------------------------------


def test_nan_loss_with_stop_policy_raises_naming_the_step(blobs, tiny_mlp, train_config):
    model = Spy(tiny_mlp(), nan_calls=(3,))
    t = Trainer(model, train_config(max_steps=10, batch_size=8, nan_policy="stop"), blobs(64))
    with pytest.raises(TrainingError, match=r"\bstep 3\b"):
        t.fit()
    assert t.step == 3


def test_nan_loss_with_skip_policy_leaves_weights_optimizer_and_schedule_untouched(blobs, tiny_mlp, train_config):
    model = Spy(tiny_mlp(), nan_calls=(3,))
    snapshots, recorder = Snapshots(), Recorder()
    cfg = train_config(max_steps=8, batch_size=8, optimizer="adamw", lr=0.01, scheduler="cosine", warmup_steps=2,
                       nan_policy="skip")
    t = Trainer(model, cfg, blobs(64), callbacks=[snapshots, recorder])
    t.fit()

    before, skipped, after = snapshots.at[2], snapshots.at[3], snapshots.at[4]
    for key in ("params", "optimizer", "schedule", "lr"):
        assert_equal_nested(skipped[key], before[key], key)
    assert changed(after["params"], skipped["params"])  # training went on
    assert after["lr"] != skipped["lr"]
    assert (t.step, t.skipped_steps) == (8, 1)
    assert recorder.logs[2]["skipped_steps"] == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


class GradPoison(nn.Module):
    """Wraps a model: on chosen training calls multiplies the gradient reaching the logits by `factor` (inf: every
    gradient inf or NaN), while the loss itself stays finite."""

    def __init__(self, inner: nn.Module, calls: tuple[int, ...], factor: float = float("inf")):
        super().__init__()
        self.inner, self.calls, self.factor, self.count = inner, set(calls), factor, 0

    def forward(self, batch):
        out = self.inner(batch)
        if self.training:
            self.count += 1
            if self.count in self.calls:
                out.logits.register_hook(lambda g: g * self.factor)
        return out


class Line(nn.Module):
    """pred = w * x under an MSE loss: targets of 1e18 give a finite loss (1e36) and a finite gradient (2e18)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, batch):
        pred = self.w * batch["x"][:, 0]
        return Output(logits=pred[:, None], loss=((pred - batch["y"]) ** 2).mean())


def test_finite_loss_with_nonfinite_gradients_is_skipped_untouched(blobs, tiny_mlp, train_config):
    # issue 13, defect 26: the loss was finite, so the NaN gradients went into the weights
    model, snapshots = GradPoison(tiny_mlp(), calls=(3,)), Snapshots()
    cfg = train_config(max_steps=6, batch_size=8, optimizer="adamw", lr=0.01, scheduler="cosine", warmup_steps=2,
                       nan_policy="skip")
    t = Trainer(model, cfg, blobs(64), callbacks=[snapshots])
    t.fit()
    before, skipped, after = snapshots.at[2], snapshots.at[3], snapshots.at[4]
    for key in ("params", "optimizer", "schedule", "lr"):
        assert_equal_nested(skipped[key], before[key], key)
    assert changed(after["params"], skipped["params"])
    assert (t.step, t.skipped_steps) == (6, 1)
    assert all(torch.isfinite(p).all() for p in model.parameters())

    stop = Trainer(GradPoison(tiny_mlp(), calls=(3,)), train_config(max_steps=6, batch_size=8), blobs(64))
    with pytest.raises(TrainingError, match=r"^gradient norm is (nan|inf) at step 3 \(epoch 0, batch 2\); lower"):
        stop.fit()


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_a_step_that_overflows_the_weights_stops_the_run_naming_it(train_config, policy):
    # issue 13, defect 11: a finite but huge loss sent the weights to inf, and every later step was skipped
    data = TensorDictDataset({"x": torch.ones(8, 1), "y": torch.full((8,), 1e18)})
    t = Trainer(Line(), train_config(max_steps=5, batch_size=8, optimizer="sgd", momentum=0.0, lr=1e21,
                                     nan_policy=policy), data)
    with pytest.raises(TrainingError) as err:
        t.fit()
    assert str(err.value).startswith("step 1 (epoch 0, batch 0) made the weights non-finite (loss 1e+36, gradient "
                                     "norm 2e+18)")
    assert t.step == 1


def test_skipped_steps_in_a_row_stop_the_run_at_max_skipped_steps(blobs, tiny_mlp, train_config):
    cfg = train_config(max_steps=20, batch_size=8, nan_policy="skip", max_skipped_steps=4)
    t = Trainer(Spy(tiny_mlp(), nan_calls=tuple(range(3, 30))), cfg, blobs(64))
    with pytest.raises(TrainingError) as err:
        t.fit()
    assert t.step == 6 and t.skipped_steps == 4  # steps 3, 4, 5 and 6
    assert str(err.value) == ("4 steps in a row were skipped, the last at step 6 (epoch 0, batch 5): loss is nan; "
                              "the run has stopped learning: lower train.lr, set train.grad_clip or check the data "
                              "(train.max_skipped_steps sets this limit)")

    scattered = Trainer(Spy(tiny_mlp(), nan_calls=(2, 4, 5, 7, 9, 10)), cfg.model_copy(update={"max_skipped_steps": 3}),
                        blobs(64))
    scattered.fit()  # never 3 in a row
    assert (scattered.step, scattered.skipped_steps) == (20, 6)
    assert scattered.state_dict()["progress"]["skipped_in_a_row"] == 0


class EvalCounter(nn.Module):
    """Wraps a model: counts the rows of every evaluation forward."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.rows = inner, 0

    def forward(self, batch):
        if not self.training:
            self.rows += len(batch["x"])
        return self.inner(batch)


@pytest.mark.parametrize(("limit", "rows"), [(None, 600), (1, 256), (2, 512), (0.1, 60), (1.0, 600)])
def test_limit_eval_batches_validates_on_the_first_batches_or_fraction(blobs, tiny_mlp, train_config, limit, rows):
    # issue 13, defect 24: evaluating a whole split dominated short runs
    model = EvalCounter(tiny_mlp())
    t = Trainer(model, train_config(max_steps=2, batch_size=8, eval_every=1, limit_eval_batches=limit), blobs(64),
                blobs(600, seed=1))
    t.fit()
    assert model.rows == 2 * rows  # two evaluations, each of the first `rows` samples (batches of 256)


def test_a_warmup_longer_than_the_run_is_scaled_to_a_tenth_of_it_in_one_line(blobs, tiny_mlp, train_config, capsys):
    # issue 13, defect 24: train.max_steps=30 failed on a preset with warmup_steps 50
    recorder = Recorder()
    cfg = train_config(max_steps=30, batch_size=8, scheduler="cosine", warmup_steps=50, lr=0.1)
    t = Trainer(tiny_mlp(), cfg, blobs(64), callbacks=[recorder])
    assert capsys.readouterr().err.splitlines() == [
        "note: train.warmup_steps 50 is not shorter than the run (30 steps): warming up over 3 steps instead"]
    t.fit()
    lrs = [row["lr"] for row in recorder.logs]
    assert lrs[:4] == pytest.approx([0.1 * 1 / 4, 0.1 * 2 / 4, 0.1 * 3 / 4, 0.1])  # (step + 1) / (warmup + 1)
    assert lrs[-1] < lrs[4]  # then the cosine decays
    Trainer(tiny_mlp(), train_config(max_steps=30, batch_size=8, scheduler="cosine", warmup_steps=29), blobs(64))
    assert capsys.readouterr().err == ""  # shorter than the run: as configured


# --- 8. mixed precision --------------------------------------------------------------------------------------------


def test_bf16_autocast_trains_on_cpu(blobs, tiny_mlp, train_config):
    model, recorder = Spy(tiny_mlp()), Recorder()
    cfg = train_config(max_steps=30, batch_size=16, precision="bf16", lr=0.02)
    t = Trainer(model, cfg, blobs(128), callbacks=[recorder])
    assert not t.scaler.is_enabled()  # bf16 needs no loss scaling
    t.fit()
    assert set(model.dtypes) == {torch.bfloat16}  # the forward really ran under bf16 autocast
    losses = [row["loss"] for row in recorder.logs]
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])


def test_fp16_scaler_skips_an_overflowing_step_without_advancing_the_schedule(blobs, tiny_mlp, train_config):
    inner = tiny_mlp()
    model, snapshots = Spy(inner), Snapshots()
    cfg = train_config(max_steps=6, batch_size=8, precision="fp16", optimizer="sgd", lr=0.05, scheduler="cosine",
                       warmup_steps=2)
    t = Trainer(model, cfg, blobs(64), callbacks=[snapshots])
    assert t.scaler.is_enabled()

    backward_calls = []

    def overflow_on_third_backward(grad):
        backward_calls.append(1)
        return grad * float("inf") if len(backward_calls) == 3 else grad

    inner.head.weight.register_hook(overflow_on_third_backward)
    t.fit()

    assert set(model.dtypes) == {torch.float16}  # fp16 autocast works on this CPU build
    before, skipped, after = snapshots.at[2], snapshots.at[3], snapshots.at[4]
    assert_equal_nested(skipped["params"], before["params"], "params")
    assert_equal_nested(skipped["schedule"], before["schedule"], "schedule")
    assert skipped["lr"] == before["lr"]
    assert skipped["scale"] == before["scale"] / 2  # the scaler backed off
    assert skipped["skipped"] == before["skipped"] + 1
    assert t.step == 6  # the step still counts
    assert after["schedule"]["state"]["last_epoch"] == skipped["schedule"]["state"]["last_epoch"] + 1
    assert changed(after["params"], skipped["params"])


# --- 9. activation checkpointing -----------------------------------------------------------------------------------


def test_activation_checkpointing_recomputes_blocks_and_changes_nothing(blobs, tiny_mlp, train_config):
    data = blobs(32)
    plain, checkpointed = tiny_mlp(hidden=[8, 8]), tiny_mlp(hidden=[8, 8])
    calls = {"plain": 0, "checkpointed": 0}

    def counter(key):
        def hook(module, args):
            calls[key] += 1
        return hook

    plain.blocks[0].register_forward_pre_hook(counter("plain"))
    checkpointed.blocks[0].register_forward_pre_hook(counter("checkpointed"))
    Trainer(plain, train_config(max_steps=5, batch_size=8), data).fit()
    Trainer(checkpointed, train_config(max_steps=5, batch_size=8, activation_checkpointing=True), data).fit()

    assert checkpointed.activation_checkpointing and not plain.activation_checkpointing
    # forward, then the recomputation in backward (a pre-hook: recomputation stops early, before forward hooks)
    assert calls == {"plain": 5, "checkpointed": 10}
    assert_params_close(checkpointed, plain, atol=1e-6)


def test_activation_checkpointing_on_a_model_without_support_is_a_config_error(blobs, train_config):
    with pytest.raises(ConfigError, match=r"train\.activation_checkpointing.*NoCheckpointing"):
        Trainer(NoCheckpointing(), train_config(max_steps=1, activation_checkpointing=True), blobs(8))


# --- 10. torch.compile ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_compiled_model_trains_like_the_eager_one(blobs, tiny_mlp, train_config):
    data = blobs(32)
    eager, compiled = tiny_mlp(), tiny_mlp()
    Trainer(eager, train_config(max_steps=3, batch_size=8), data).fit()
    t = Trainer(compiled, train_config(max_steps=3, batch_size=8, compile=True), data)
    assert t.module is not compiled  # the loop calls the compiled wrapper, the plain module is what gets saved
    t.fit()
    assert t.step == 3
    assert_params_close(compiled, eager, atol=1e-5)


# --- 11. early stopping --------------------------------------------------------------------------------------------


def test_early_stopping_stops_when_the_metric_stalls_and_its_state_round_trips(blobs, tiny_mlp, train_config):
    data, val = blobs(64), blobs(32, seed=1)
    stopper = EarlyStopping("val/loss", patience=2, min_delta=1.0)  # nothing improves by a whole nat per step
    cfg = train_config(max_steps=50, batch_size=8, eval_every=1, lr=1e-3)
    t = Trainer(tiny_mlp(), cfg, data, val_data=val, callbacks=[stopper])
    t.fit()
    assert t.step == 3  # evaluation 1 sets the best; 2 and 3 do not beat it
    assert t.stop_reason.startswith("early_stopping") and "val/loss" in t.stop_reason
    assert stopper.wait == 2 and stopper.best is not None

    state = json.loads(json.dumps(t.state_dict()["callbacks"]["EarlyStopping"]))
    assert state == {"best": stopper.best, "wait": 2}
    fresh = EarlyStopping("val/loss", patience=2, min_delta=1.0)
    resumed = Trainer(tiny_mlp(), cfg, data, val_data=val, callbacks=[fresh])
    resumed.load_state_dict(t.state_dict())
    assert fresh.state_dict() == stopper.state_dict()


def test_early_stopping_lets_an_improving_run_finish(blobs, tiny_mlp, train_config):
    data = blobs(32)
    stopper = EarlyStopping("val/loss", patience=2)
    cfg = train_config(max_steps=15, batch_size="full", optimizer="sgd", momentum=0.0, lr=0.1, eval_every=1)
    t = Trainer(tiny_mlp(), cfg, data, val_data=data, callbacks=[stopper])  # plain GD on the val set itself
    t.fit()
    assert t.step == 15 and t.stop_reason == "max_steps"
    assert stopper.wait == 0


def test_early_stopping_on_an_unknown_metric_names_the_key(blobs, tiny_mlp, train_config):
    t = Trainer(tiny_mlp(), train_config(max_steps=5, batch_size=8, eval_every=1), blobs(32), val_data=blobs(16),
                metrics=TaskMetrics("classification", num_classes=3), callbacks=[EarlyStopping("val/acuracy")])
    with pytest.raises(ConfigError, match=r"train\.early_stopping\.metric.*'val/acuracy'.*val/accuracy"):
        t.fit()


# --- 12. evaluation every N steps ----------------------------------------------------------------------------------


def test_evaluation_every_n_steps(blobs, tiny_mlp, train_config):
    model, val, recorder = tiny_mlp(), blobs(40, seed=1), Recorder()
    cfg = train_config(max_steps=20, batch_size=8, eval_every=5)
    Trainer(model, cfg, blobs(64), val_data=val, metrics=TaskMetrics("classification", num_classes=3),
            callbacks=[recorder]).fit()

    assert [step for step, _ in recorder.evals] == [5, 10, 15, 20]
    for _, metrics in recorder.evals:
        assert {"val/loss", "val/accuracy"} <= set(metrics)
        assert all(k.startswith("val/") for k in metrics)
    model.eval()
    with torch.no_grad():  # the last evaluation is of the final weights
        assert recorder.evals[-1][1]["val/loss"] == pytest.approx(model(val.tensors).loss.item(), rel=1e-5)


# --- 13. devices ---------------------------------------------------------------------------------------------------


def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)


def test_explicit_devices_parse():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cuda", local_rank=2) == torch.device("cuda", 2)
    assert resolve_device("mps") == torch.device("mps")


@pytest.mark.parametrize(("pref", "cuda", "count", "mps", "said"), [
    ("cuda", False, 0, False, "no CUDA GPU"), ("cuda:3", True, 2, False, "there are 2 CUDA GPUs"),
    ("mps", False, 0, False, "MPS is not available"),
])
def test_a_device_this_machine_lacks_is_a_config_error(monkeypatch, pref, cuda, count, mps, said):
    """Not an AssertionError from deep inside torch: one line naming train.device (issue 13, defect 9)."""
    from dlforge.train.distributed import setup

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    with pytest.raises(ConfigError, match=rf"^train\.device: '{pref}', but .*{said}"):
        setup(pref)


def test_trainer_places_the_model_on_the_resolved_device(blobs, tiny_mlp, train_config):
    t = Trainer(tiny_mlp(), train_config(max_steps=1), blobs(8))
    assert t.device == resolve_device("auto")
    assert all(p.device.type == t.device.type for p in t.model.parameters())
    t = Trainer(tiny_mlp(), train_config(max_steps=1, device="cpu"), blobs(8))
    assert t.device == torch.device("cpu")


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda1", ""])
def test_an_invalid_device_is_rejected_naming_train_device(device):
    with pytest.raises(ValidationError, match="device"):
        TrainConfig(max_steps=1, device=device)
    raw = {"data": {"name": "iris"}, "model": {"name": "mlp"}, "train": {"max_steps": 1, "device": device}}
    with pytest.raises(ConfigError, match=r"^train\.device: expected auto, cpu, cuda, cuda:N or mps"):
        load_config(raw)


# --- 14. logs and throughput ---------------------------------------------------------------------------------------


def test_log_rows_come_every_log_every_steps_with_throughput(blobs, tiny_mlp, train_config):
    recorder = Recorder()
    Trainer(tiny_mlp(), train_config(max_steps=9, batch_size=8, log_every=3), blobs(64), callbacks=[recorder]).fit()
    assert [bool(logs) for logs in recorder.every_step] == [True, False, True] + [False, False, True] * 2
    assert [row["step"] for row in recorder.logs] == [1, 3, 6, 9]
    for row in recorder.logs:
        assert set(row) == {"step", "epoch", "loss", "lr", "samples_per_s", "grad_norm"}
        assert math.isfinite(row["samples_per_s"]) and row["samples_per_s"] > 0
        assert row["epoch"] == pytest.approx(row["step"] / 8)


def test_the_first_and_last_steps_are_logged_so_a_short_run_has_curves(blobs, tiny_mlp, train_config):
    """Issue 13, defect 23: a run shorter than log_every logged no training row (no loss curve, no lr plot)."""
    recorder = Recorder()
    Trainer(tiny_mlp(), train_config(max_steps=5, batch_size=8, log_every=10), blobs(64), callbacks=[recorder]).fit()
    assert [row["step"] for row in recorder.logs] == [1, 5]
    assert recorder.logs[0]["loss"] != recorder.logs[1]["loss"] and all("lr" in row for row in recorder.logs)


@pytest.mark.parametrize(("limits", "reason"), [
    ({"max_epochs": 2}, "max_epochs"),
    ({"max_epochs": 2, "max_steps": 100}, "max_epochs"),
    ({"max_epochs": 2, "max_steps": 5}, "max_steps"),
    ({"max_steps": 5}, "max_steps"),
])
def test_the_stop_reason_names_the_limit_that_ended_the_run(blobs, tiny_mlp, train_config, limits, reason):
    """Issue 13, defect 23: a run that stopped on max_epochs said it stopped on max_steps."""
    t = Trainer(tiny_mlp(), train_config(batch_size=16, **limits), blobs(64))
    t.fit()
    assert t.stop_reason == reason and t.step == min(limits.get("max_steps", 8), 8)  # 4 steps an epoch


# --- 15. callback state --------------------------------------------------------------------------------------------


def test_callback_state_round_trips_and_a_resumed_run_continues_it(blobs, tiny_mlp, train_config):
    data, val = blobs(64), blobs(16, seed=1)
    counter = StepCounter()
    t = Trainer(tiny_mlp(), train_config(max_steps=4, batch_size=8, eval_every=2), data, val_data=val,
                callbacks=[counter])
    t.fit()
    state = t.state_dict()
    assert state["callbacks"]["StepCounter"] == {"steps": 4, "evals": 2}

    fresh = StepCounter()
    resumed = Trainer(tiny_mlp(), train_config(max_steps=8, batch_size=8, eval_every=2), data, val_data=val,
                      callbacks=[fresh])
    resumed.load_state_dict(state)
    assert fresh.state_dict() == {"steps": 4, "evals": 2}
    resumed.fit()
    assert fresh.state_dict() == {"steps": 8, "evals": 4}


def test_two_callbacks_of_the_same_class_keep_their_own_state(blobs, tiny_mlp, train_config):
    data, val = blobs(64), blobs(16, seed=1)
    cfg = train_config(max_steps=6, batch_size=8, eval_every=2)
    metrics = TaskMetrics("classification", num_classes=3)
    on_loss, on_accuracy = EarlyStopping("val/loss", patience=100), EarlyStopping("val/accuracy", patience=100)
    t = Trainer(tiny_mlp(), cfg, data, val_data=val, metrics=metrics, callbacks=[on_loss, on_accuracy])
    t.fit()
    assert on_loss.best != on_accuracy.best

    fresh_loss, fresh_accuracy = EarlyStopping("val/loss", patience=100), EarlyStopping("val/accuracy", patience=100)
    resumed = Trainer(tiny_mlp(), cfg, data, val_data=val, metrics=metrics, callbacks=[fresh_loss, fresh_accuracy])
    resumed.load_state_dict(t.state_dict())
    assert fresh_loss.state_dict() == on_loss.state_dict()
    assert fresh_accuracy.state_dict() == on_accuracy.state_dict()
