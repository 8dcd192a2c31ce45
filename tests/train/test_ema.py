"""The EMA callback: the average it keeps is the recurrence over the weights after each step, validation and the
best checkpoint see it, the model keeps it at the end, and a resumed run continues it bit for bit."""

from __future__ import annotations

import torch

from dlforge.artifacts import load_model
from dlforge.train.callbacks import EMA, Callback, Checkpointer
from dlforge.train.trainer import Trainer


class Recorder(Callback):
    """The weights after every step, and the weights each validation pass saw."""

    def __init__(self):
        self.steps: list[dict[str, torch.Tensor]] = []
        self.evaluated: list[dict[str, torch.Tensor]] = []

    def on_step_end(self, trainer, logs):
        self.steps.append({k: v.clone() for k, v in trainer.model.state_dict().items()})

    def on_eval_end(self, trainer, metrics):
        self.evaluated.append({k: v.clone() for k, v in trainer.model.state_dict().items()})


def expected_average(start: dict, steps: list[dict], decay: float, warmup: bool) -> dict:
    avg = {k: v.clone().double() for k, v in start.items()}
    for n, weights in enumerate(steps, start=1):
        d = min(decay, (1 + n) / (10 + n)) if warmup else decay
        for k in avg:
            avg[k] = d * avg[k] + (1 - d) * weights[k].double()
    return avg


def test_the_average_is_the_recurrence_and_validation_sees_it(blobs, tiny_mlp, train_config):
    data, val = blobs(64), blobs(16, seed=1)
    model = tiny_mlp()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    recorder, ema = Recorder(), EMA(decay=0.9, warmup=True)
    # the recorder's on_eval_end runs before the EMA's: it sees what validation saw
    t = Trainer(model, train_config(max_steps=6, batch_size=8, eval_every=3), data, val_data=val,
                callbacks=[recorder, ema])
    t.fit()
    for k, v in expected_average(start, recorder.steps[:3], 0.9, True).items():
        torch.testing.assert_close(recorder.evaluated[0][k].double(), v, atol=1e-6, rtol=1e-6)
    assert not torch.equal(recorder.evaluated[0]["head.weight"], recorder.steps[2]["head.weight"])
    for k, v in expected_average(start, recorder.steps, 0.9, True).items():  # the model keeps the average at the end
        torch.testing.assert_close(model.state_dict()[k].double(), v, atol=1e-6, rtol=1e-6)


def test_training_continues_from_the_raw_weights_after_each_evaluation(blobs, tiny_mlp, train_config):
    data, val = blobs(64), blobs(16, seed=1)
    plain, with_ema = Recorder(), Recorder()
    Trainer(tiny_mlp(), train_config(max_steps=6, batch_size=8, eval_every=2), data, val_data=val,
            callbacks=[plain]).fit()
    Trainer(tiny_mlp(), train_config(max_steps=6, batch_size=8, eval_every=2), data, val_data=val,
            callbacks=[with_ema, EMA(decay=0.5)]).fit()
    for a, b in zip(plain.steps, with_ema.steps, strict=True):  # the average never leaks into training
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_best_checkpoint_holds_the_average_and_resume_is_bitwise(blobs, tiny_mlp, train_config, tmp_path):
    from dlforge.train.checkpoint import load_checkpoint

    data, val = blobs(64), blobs(16, seed=1)
    recorder = Recorder()
    straight_model = tiny_mlp()
    Trainer(straight_model, train_config(max_steps=8, batch_size=8, eval_every=4), data, val_data=val,
            callbacks=[recorder, Checkpointer(tmp_path / "a", None, 1, "val/loss"), EMA(decay=0.8)]).fit()
    best, _ = load_model(tmp_path / "a" / "best")
    assert any(all(torch.equal(best.state_dict()[k], seen[k]) for k in seen) for seen in recorder.evaluated)

    # the first half, checkpointed at step 4 (raw weights and the average), then a fresh Trainer resumes it
    Trainer(tiny_mlp(), train_config(max_steps=4, batch_size=8, eval_every=4), data, val_data=val,
            callbacks=[Checkpointer(tmp_path / "b", 4, 2, None), EMA(decay=0.8)]).fit()
    state = load_checkpoint(tmp_path / "b" / "checkpoint-4")
    assert state["callbacks"]["EMA"]["updates"] == 4
    resumed_model, resumed_ema = tiny_mlp(seed=1), EMA(decay=0.8)
    resumed = Trainer(resumed_model, train_config(max_steps=8, batch_size=8, eval_every=4), data, val_data=val,
                      callbacks=[resumed_ema])
    resumed.load_state_dict(state)
    resumed.fit()
    assert resumed_ema.updates == 8
    for k, v in straight_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[k], v), k
