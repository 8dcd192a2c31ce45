"""The adversarial step: a GAN's two players, each with its own optimizer, in the Trainer's loop.

    trainer = AdversarialTrainer(gan, cfg.train, train_data, val_data, metrics=..., callbacks=[...])
    trainer.fit()   # the Trainer's loop; only the step differs

One loss cannot train a GAN: the discriminator D learns to tell real images from generated ones while the generator
G learns to fool it. Each optimizer step here is the two updates of the DCGAN paper's loop, on one batch of real
images: D's (its loss, backward, clip, step: the generator gets no gradient), then G's (its loss through D, backward,
clip, step; the gradients this leaves on D are dropped). The hook a model offers for it is documented in one place:
`adversarial = True`, `generator_parameters()` and `discriminator_parameters()`, and `forward(batch, player=...)`
returning that player's loss ("discriminator" or "generator"; both summed without it), so that DDP, which all-reduces
gradients in the backward of whatever ran through `forward`, wraps the whole model as usual.

Everything else is the Trainer's: the resumable data order, AMP (a GradScaler per player), clipping, the finite
checks (a step whose losses or gradients are not finite is skipped for both players or stops the run, as
`nan_policy` says), evaluation, callbacks and checkpoints, which hold both optimizers, schedules and scalers, so that
a resumed run continues bit for bit. `train.lr` is G's learning rate; D's is it times the model's `d_lr_scale`.
Logged beside `loss` (their sum): `d_loss` and `g_loss`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from dlforge.errors import ConfigError
from dlforge.train import distributed
from dlforge.train.optim import build_optimizer, build_schedule
from dlforge.train.trainer import Trainer

PLAYERS = ("discriminator", "generator")


class _Params(torch.nn.Module):
    """A module holding some parameters of another, so that `build_optimizer` groups them as it does a model's."""

    def __init__(self, params: dict[str, torch.nn.Parameter]):
        super().__init__()
        self.params = torch.nn.ParameterDict({name.replace(".", "__"): p for name, p in params.items()})


class AdversarialTrainer(Trainer):
    """The Trainer with the adversarial step (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, config, *args: Any, **kwargs: Any):
        if config.grad_accum > 1:
            raise ConfigError("train.grad_accum: the adversarial step takes one batch per update; set it to 1")
        if config.compile:
            raise ConfigError("train.compile: not supported for adversarial training (forward takes `player`)")
        super().__init__(model, config, *args, **kwargs)
        c = self.cfg
        if self.dist.enabled:  # D's step leaves G unused: let DDP find which parameters took part
            ids = [self.device] if self.device.type == "cuda" else None
            self.module = DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
        d_cfg = c.model_copy(update={"lr": c.lr * getattr(model.config, "d_lr_scale", 1.0)})
        mode = c.monitor_mode if c.monitor_mode != "auto" else "min"
        self.optimizers = {
            "generator": build_optimizer(_Params(dict(model.generator_parameters())), c),
            "discriminator": build_optimizer(_Params(dict(model.discriminator_parameters())), d_cfg)}
        self.schedules = {p: build_schedule(opt, c if p == "generator" else d_cfg, self.max_steps, mode)
                          for p, opt in self.optimizers.items()}
        self.scalers = {p: torch.amp.GradScaler(self.device.type, enabled=c.precision == "fp16") for p in PLAYERS}
        # the base's attributes are G's: what the schedule logs and what callbacks read
        self.optimizer, self.schedule, self.scaler = (self.optimizers["generator"], self.schedules["generator"],
                                                      self.scalers["generator"])
        self._player_sums = dict.fromkeys(PLAYERS, 0.0)

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """D's update, then G's, on one batch of real images. Returns logs on log steps."""
        c = self.cfg
        if not self.model.training:
            self.module.train()
        n = len(next(iter(batch.values())))
        batch = self._to_device(batch)
        self.step += 1
        self.batch_in_epoch += 1
        self._samples += n * self.dist.world_size
        log_step = self.step % c.log_every == 0 or self.step in (1, self.max_steps)
        losses, norms = {}, []
        for player in PLAYERS:
            loss, norm = self._update(player, batch)
            if loss is None:  # skipped: neither player moves on a step whose numbers are not finite
                self.model.zero_grad(set_to_none=True)
                return self._logs(None) if log_step else {}
            losses[player] = loss
            norms.append(norm)
        total = losses["discriminator"] + losses["generator"]
        self._loss_sum += total
        self._loss_count += 1
        for player, value in losses.items():
            self._player_sums[player] += value
        self.skipped_in_a_row = 0
        return self._logs(torch.stack(norms).max()) if log_step else {}

    def _update(self, player: str, batch: dict[str, torch.Tensor]) -> tuple[float | None, torch.Tensor | None]:
        """One player's loss, backward, clip and step; (loss, gradient norm), or (None, None) when skipped."""
        optimizer, scaler = self.optimizers[player], self.scalers[player]
        with self._autocast():
            loss = self.module(batch, player=player).loss
        scaler.scale(loss).backward()
        value = loss.detach()
        if self.dist.enabled:
            value = distributed.mean_across(self.dist, value)
        if not torch.isfinite(value):
            self._skip(f"the {player}'s loss is {value.item()}")
            return None, None
        scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if self.cfg.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        if not scaler.is_enabled() and not torch.isfinite(norm):
            self._skip(f"the {player}'s gradient norm is {norm.item()}")
            return None, None
        self._lr = optimizer.param_groups[-1]["lr"] if player == "generator" else self._lr
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        if scaler.get_scale() >= scale:
            self.schedules[player].step()
        self._check_weights(value, norm)
        self.model.zero_grad(set_to_none=True)  # G's backward leaves gradients on D: dropped
        return value.item(), norm

    def _logs(self, grad_norm: torch.Tensor | None) -> dict[str, float]:
        count = self._loss_count
        logs = super()._logs(grad_norm)
        if count:
            logs.update({f"{p[0]}_loss": total / count for p, total in self._player_sums.items()})
        self._player_sums = dict.fromkeys(PLAYERS, 0.0)
        return logs

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["adversarial"] = {"discriminator_optimizer": self.optimizers["discriminator"].state_dict(),
                                "discriminator_schedule": self.schedules["discriminator"].state_dict(),
                                "discriminator_scaler": self.scalers["discriminator"].state_dict(),
                                "sums": dict(self._player_sums)}
        return state

    def load_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> None:
        super().load_state_dict(state, source)
        adversarial = state.get("adversarial")
        if adversarial is None:
            raise ConfigError(f"{source}: not a checkpoint of adversarial training (no discriminator optimizer)")
        self.optimizers["discriminator"].load_state_dict(adversarial["discriminator_optimizer"])
        self.schedules["discriminator"].load_state_dict(adversarial["discriminator_schedule"])
        if adversarial.get("discriminator_scaler"):
            self.scalers["discriminator"].load_state_dict(adversarial["discriminator_scaler"])
        self._player_sums = dict(adversarial["sums"])
