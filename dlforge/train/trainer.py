"""The Trainer: one loop you can read in a minute.

    trainer = Trainer(model, cfg.train, train_data, val_data, metrics=TaskMetrics(...), callbacks=[...])
    trainer.fit()

Each optimizer step takes one step batch from the resumable sampler, splits it into `grad_accum` micro-batches,
runs forward under autocast and backward (through the GradScaler for fp16), clips, checks the loss and gradients
are finite (`nan_policy`, `max_skipped_steps`), steps the optimizer and the schedule, checks the weights stayed
finite, and tells the callbacks. The model computes its own loss.
Everything optional — logging, checkpoints, early stopping, plots, progress — is a callback (see callbacks.py).

The Trainer's whole state (model, optimizer, schedule, scaler, RNGs, data position, callbacks) is `state_dict()`;
loading it and calling `fit()` continues bit for bit where the state was taken.
"""

from __future__ import annotations

import contextlib
import functools
import random
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from dlforge.config import TrainConfig
from dlforge.data.dataset import collate_batch, sample_lengths
from dlforge.errors import CheckpointError, ConfigError, TrainingError, warn
from dlforge.eval.evaluate import evaluate_model, first_batches
from dlforge.eval.metrics import lower_is_better
from dlforge.train import distributed, transfer
from dlforge.train.callbacks import Callback
from dlforge.train.optim import build_optimizer, build_schedule, fit_warmup
from dlforge.train.sampler import StepBatchSampler

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, model: torch.nn.Module, config: TrainConfig, train_data: Dataset,
                 val_data: Dataset | None = None, metrics: Any = None, callbacks: list[Callback] | None = None,
                 num_workers: int = 0, batch_transform: torch.nn.Module | None = None):
        self.cfg = c = config
        self.num_workers = num_workers
        self.dist = distributed.setup(c.device)
        self.device = self.dist.device
        if self.dist.rank:  # seeded alike, every rank would repeat rank 0's draws (a GAN's noise, dropout masks)
            self._reseed_rank(0)
        self.model = model.to(self.device)  # the plain module: saved, evaluated
        self.channels_last = c.channels_last
        self._convolutions = any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        # e.g. batched augmentation, run on the training device (training batches only)
        self.batch_transform = batch_transform.to(self.device) if batch_transform is not None else None
        if c.activation_checkpointing:
            if not getattr(model, "supports_activation_checkpointing", False):
                raise ConfigError(f"train.activation_checkpointing: {type(model).__name__} does not support it")
            model.activation_checkpointing = True
        self.module = model  # what the loop calls: maybe DDP-wrapped, maybe compiled
        if self.dist.enabled:
            ids = [self.device] if self.device.type == "cuda" else None
            self.module = DistributedDataParallel(model, device_ids=ids)
        if c.compile:
            self.module = torch.compile(self.module)
        self.train_data, self.val_data, self.metrics = train_data, val_data, metrics
        self.callbacks = list(callbacks or [])

        n = len(train_data)
        self.batch_size = n if c.batch_size == "full" else min(c.batch_size, n)
        if self.batch_size % self.dist.world_size:
            world = self.dist.world_size
            raise ConfigError(f"train.batch_size: {self.batch_size} does not split over {world} processes")
        lengths = None
        if c.group_by_length:
            lengths = sample_lengths(train_data)
            if lengths is None:
                raise ConfigError(f"train.group_by_length: the training data ({type(train_data).__name__}) has no "
                                  "sample lengths; set it to false")
        self.sampler = StepBatchSampler(n, self.batch_size * c.grad_accum, c.seed, lengths=lengths,
                                        rank=self.dist.rank, world_size=self.dist.world_size)
        self.steps_per_epoch = self.sampler.batches_per_epoch
        epochs_steps = c.max_epochs * self.steps_per_epoch if c.max_epochs else None
        self.max_steps = min(s for s in (c.max_steps, epochs_steps) if s is not None)
        self.limit = "max_steps" if self.max_steps == c.max_steps else "max_epochs"  # the stop reason at the end
        if val_data is not None:  # train.limit_eval_batches: the first batches of it
            self.val_data = first_batches(val_data, c.limit_eval_batches, self.eval_batch_size)
        self.cfg = c = self._fit_warmup(c)

        scales = transfer.lr_scales(model, c.transfer) if c.transfer is not None else None
        self.optimizer = build_optimizer(model, c, lr_scales=scales)
        mode = c.monitor_mode if c.monitor_mode != "auto" else ("min" if lower_is_better(c.monitor) else "max")
        self.schedule = build_schedule(self.optimizer, c, self.max_steps, monitor_mode=mode)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=c.precision == "fp16")
        self.autocast_dtype = AMP_DTYPES.get(c.precision)

        # progress: everything a resume needs besides model/optimizer/RNG state
        self.step, self.epoch, self.batch_in_epoch, self.skipped_steps, self.skipped_in_a_row = 0, 0, 0, 0, 0
        self.should_stop, self.stop_reason, self.interrupted = False, "", False
        self._loss_sum, self._loss_count, self._samples, self._tokens = 0.0, 0, 0, 0
        self._lr = c.lr
        self.last_eval: dict[str, float] = {}

    @property
    def eval_batch_size(self) -> int:
        return max(self.batch_size, 256)

    def _fit_warmup(self, c: TrainConfig) -> TrainConfig:
        """A warmup as long as the run (a preset shortened) scaled down to a tenth of it, said in one line."""
        c, note = fit_warmup(c, self.max_steps)
        if note and self.dist.is_main:
            print(f"note: {note}", file=sys.stderr, flush=True)
        return c

    # --- the loop ------------------------------------------------------------------------------------------------

    def fit(self) -> dict[str, float]:
        """Train until max_steps / max_epochs, early stopping or a signal. Returns the last evaluation."""
        self._emit("on_fit_start")
        previous = self._install_signal_handlers()
        self._tick = time.perf_counter()
        try:
            while not self._done():
                for batch in self._epoch_batches():
                    with onednn_guard(self.device, self._convolutions):  # off only where unsafe (see there)
                        logs = self.train_step(batch)
                    if isinstance(self.cfg.eval_every, int) and self.step % self.cfg.eval_every == 0:
                        self.evaluate()
                    self._emit("on_step_end", logs)
                    if self._done():
                        break
                if self.batch_in_epoch >= self.steps_per_epoch and not self.interrupted:  # the epoch ran to its end
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    if self.cfg.eval_every == "epoch":
                        self.evaluate()
                    self._emit("on_epoch_end")
        except BaseException as exc:
            self._emit("on_exception", exc)
            raise
        finally:
            self._restore_signal_handlers(previous)
        if not self.stop_reason:
            self.stop_reason = "interrupted" if self.interrupted else self.limit
        self._emit("on_fit_end")
        return self.last_eval

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    @property
    def epoch_progress(self) -> float:
        """Epochs done, fractional: 2.5 is halfway through the third epoch."""
        return round(self.step / self.steps_per_epoch, 4)

    def _done(self) -> bool:
        return self.should_stop or self.interrupted or self.step >= self.max_steps

    def _epoch_batches(self):
        self.sampler.set_epoch(self.epoch, start=self.batch_in_epoch)
        g = torch.Generator().manual_seed(self.cfg.seed * 7919 + self.epoch)  # worker seeds: independent of resume
        loader = DataLoader(self.train_data, batch_sampler=self.sampler, collate_fn=collate_batch,
                            num_workers=self.num_workers, generator=g, pin_memory=self.device.type == "cuda")
        yield from loader

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimizer step over a step batch (split into grad_accum micro-batches). Returns logs on log steps."""
        c = self.cfg
        if not self.model.training:  # evaluation leaves it in eval mode; walking the module tree costs per step
            self.module.train()
        n = len(next(iter(batch.values())))
        micro = [batch]
        if c.grad_accum > 1:
            micro = [{k: v[i] for k, v in batch.items()} for i in _chunks(n, c.grad_accum)]
        total = None
        for i, mb in enumerate(micro):
            mb = self._to_device(mb)
            sync = contextlib.nullcontext()
            if self.dist.enabled and i < len(micro) - 1:
                sync = self.module.no_sync()  # all-reduce gradients once, on the last micro-batch
            with sync, self._autocast():
                loss = self.module(mb).loss
            if len(micro) > 1:  # exact mean over the step batch, even for a short last one
                loss = loss * (len(next(iter(mb.values()))) / n)
            self.scaler.scale(loss).backward()
            total = loss.detach() if total is None else total + loss.detach()
        self.step += 1
        self.batch_in_epoch += 1
        self._samples += n * self.dist.world_size
        if "input_ids" in batch:  # token models: tokens read, padding included
            self._tokens += batch["input_ids"].numel() * self.dist.world_size

        if self.dist.enabled:  # the global mean: a NaN on any rank (whose gradients reach all ranks) is seen by all
            total = distributed.mean_across(self.dist, total)
        # the first and last steps too: a run shorter than log_every still has a curve (and an lr) to plot
        log_step = self.step % c.log_every == 0 or self.step in (1, self.max_steps)
        grad_norm = None
        if not torch.isfinite(total):
            self._skip(f"loss is {total.item()}")
        else:
            self.scaler.unscale_(self.optimizer)
            grad_norm = self._clip_gradients()
            if not self.scaler.is_enabled() and not torch.isfinite(grad_norm):  # fp16: the scaler skips these itself
                self._skip(f"gradient norm is {grad_norm.item()}")
                grad_norm = None
            else:
                self._optimizer_step()
                self._check_weights(total, grad_norm)
                self._loss_sum += total.item()
                self._loss_count += 1
        self.optimizer.zero_grad(set_to_none=True)
        return self._logs(grad_norm) if log_step else {}

    def _clip_gradients(self) -> torch.Tensor:
        """Clip as configured; return the gradient norm before any clipping (inf or NaN if a gradient is)."""
        c = self.cfg
        if c.grad_clip is not None and c.grad_clip_mode == "norm":
            return torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        if c.grad_clip is not None and c.grad_clip_mode == "value":
            torch.nn.utils.clip_grad_value_(self.model.parameters(), c.grad_clip)
        return norm

    def _optimizer_step(self) -> None:
        """Step the optimizer, then the schedule; the GradScaler skips the step when fp16 gradients overflowed."""
        self._lr = self.optimizer.param_groups[-1]["lr"]  # the lr this step used (the head's, if they differ)
        scale = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scaler.get_scale() >= scale:  # a skipped AMP step never advances the schedule
            self.schedule.step()
            self.skipped_in_a_row = 0
        else:
            self._count_skip("fp16 gradients overflowed")

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Move a training micro-batch to the device, augment it there, and set its memory format."""
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if self.batch_transform is not None:
            batch = self.batch_transform(batch)
        if self.channels_last:
            batch = {k: v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v for k, v in batch.items()}
        return batch

    def _where(self) -> str:
        return f"step {self.step} (epoch {self.epoch}, batch {self.batch_in_epoch - 1})"

    def _skip(self, problem: str) -> None:
        """A step whose loss or gradients are not finite: raise (nan_policy stop), or skip it, leaving parameters,
        optimizer and schedule untouched."""
        if self.cfg.nan_policy == "stop":
            raise TrainingError(f"{problem} at {self._where()}; lower train.lr, set train.grad_clip, "
                                "or set train.nan_policy=skip to skip such steps")
        self._count_skip(problem)

    def _count_skip(self, problem: str) -> None:
        self.skipped_steps += 1
        self.skipped_in_a_row += 1
        limit = self.cfg.max_skipped_steps
        if limit is not None and self.skipped_in_a_row >= limit:
            raise TrainingError(f"{limit} steps in a row were skipped, the last at {self._where()}: {problem}; the "
                                "run has stopped learning: lower train.lr, set train.grad_clip or check the data "
                                "(train.max_skipped_steps sets this limit)")

    def _check_weights(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """Finite loss and gradients can still overflow the weights (a huge loss or lr). A step cannot be skipped
        once taken, so the run stops here whatever nan_policy says, rather than skip every step after it."""
        weights = [p for p in self.model.parameters() if p.requires_grad]
        largest = torch.nn.utils.get_total_norm(weights, norm_type=float("inf"))  # max |w|: inf or NaN if one is
        if not torch.isfinite(largest):
            raise TrainingError(f"{self._where()} made the weights non-finite (loss {loss.item():.4g}, gradient norm "
                                f"{grad_norm.item():.4g}); lower train.lr or set train.grad_clip")

    def _logs(self, grad_norm: torch.Tensor | None) -> dict[str, float]:
        now = time.perf_counter()
        elapsed, self._tick = now - self._tick, now
        loss = self._loss_sum / self._loss_count if self._loss_count else float("nan")
        logs = {"step": self.step, "epoch": self.epoch_progress, "loss": loss, "lr": self._lr,
                "samples_per_s": self._samples / elapsed if elapsed > 0 else 0.0}
        if self._tokens:
            logs["tokens_per_s"] = self._tokens / elapsed if elapsed > 0 else 0.0
        if grad_norm is not None:
            logs["grad_norm"] = grad_norm.item()
        if self.skipped_steps:
            logs["skipped_steps"] = self.skipped_steps
        self._loss_sum, self._loss_count, self._samples, self._tokens = 0.0, 0, 0, 0
        return logs

    # --- evaluation ----------------------------------------------------------------------------------------------

    def evaluate(self, data: Dataset | None = None, split: str = "val") -> dict[str, float]:
        """Mean loss and task metrics over a dataset, as {"<split>/loss": ..., "<split>/<metric>": ...}."""
        data = self.val_data if data is None else data
        if data is None:
            return {}
        if split == "val":
            self._emit("on_eval_start")
        results = evaluate_model(self.model, data, self.metrics, batch_size=self.eval_batch_size,
                                 device=self.device, autocast_dtype=self.autocast_dtype,
                                 channels_last=self.channels_last)
        results = {f"{split}/{k}": v for k, v in results.items()}
        if split == "val":
            self.last_eval = results
            if self.cfg.monitor in results:
                self.schedule.on_eval(results[self.cfg.monitor])
            self._emit("on_eval_end", results)
        return results

    # --- callbacks, signals ----------------------------------------------------------------------------------------

    def _emit(self, event: str, *args: Any) -> None:
        for cb in self.callbacks:
            if self.dist.is_main or not cb.rank_zero_only:
                getattr(cb, event)(self, *args)
        if self.dist.enabled and event == "on_eval_end":
            self.should_stop = distributed.broadcast_flag(self.dist, self.should_stop)

    def _install_signal_handlers(self) -> dict:
        def handler(signum, frame):
            self.interrupted = True
            self.stop_reason = signal.Signals(signum).name
        previous = {}
        with contextlib.suppress(ValueError):  # only the main thread may install handlers
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, handler)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict) -> None:
        for sig, h in previous.items():
            signal.signal(sig, h)

    # --- state ---------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "progress": {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                         "skipped_steps": self.skipped_steps, "skipped_in_a_row": self.skipped_in_a_row,
                         "loss_sum": self._loss_sum,
                         "loss_count": self._loss_count, "samples": self._samples, "tokens": self._tokens,
                         "should_stop": self.should_stop, "stop_reason": self.stop_reason,
                         "last_eval": self.last_eval},
            "data_order": self.sampler.state_dict(),
            "rng": rng,
            "callbacks": {key: cb.state_dict() for key, cb in self._callback_keys()},
        }

    def load_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> None:
        """Continue from `state` (see `state_dict`); `source` names it in errors: a model of other shapes (its config
        changed since), or an optimizer of other parameter groups (weight decay, transfer or LoRA settings)."""
        from dlforge.artifacts import check_shapes  # here: importing the Trainer loads no model-folder code

        check_shapes(self.model.state_dict(), state["model"], source,
                     "the model config differs from the one this checkpoint was trained with")
        self.model.load_state_dict(state["model"])
        saved = [len(g["params"]) for g in state["optimizer"]["param_groups"]]
        own = [len(g["params"]) for g in self.optimizer.param_groups]
        if saved != own:
            raise CheckpointError(f"{source}: the optimizer state has parameter groups of {saved} tensors, this run "
                                  f"{own}; train.weight_decay, train.transfer or train.lora differ from the "
                                  "checkpoint's")
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        p = state["progress"]
        self.step, self.epoch, self.batch_in_epoch = p["step"], p["epoch"], p["batch_in_epoch"]
        self.skipped_steps, self._loss_sum, self._loss_count = p["skipped_steps"], p["loss_sum"], p["loss_count"]
        self._samples, self.should_stop, self.stop_reason = p["samples"], p["should_stop"], p["stop_reason"]
        self._tokens, self.skipped_in_a_row = p.get("tokens", 0), p.get("skipped_in_a_row", 0)
        self.last_eval = p["last_eval"]
        if self.stop_reason in ("SIGTERM", "SIGINT", "interrupted"):
            self.stop_reason = ""
        rng = state["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        if self.dist.rank:  # the checkpoint holds rank 0's generators: the others start afresh from this step
            self._reseed_rank(self.step)
        for key, cb in self._callback_keys():
            if key in state["callbacks"]:
                cb.load_state_dict(state["callbacks"][key])

    def _reseed_rank(self, step: int) -> None:
        """Another rank's own random streams, from (seed, rank, step). A resumed distributed run continues rank 0's
        streams exactly and reseeds the others: its data order and weights' path match only up to these draws."""
        seed = (self.cfg.seed * 1_000_003 + self.dist.rank * 7_919 + step) % 2**32
        seed_everything(seed)

    def _callback_keys(self) -> list[tuple[str, Callback]]:
        """Class name, with #2, #3... for a second and third callback of one class."""
        seen: dict[str, int] = {}
        keys = []
        for cb in self.callbacks:
            name = type(cb).__name__
            seen[name] = seen.get(name, 0) + 1
            keys.append((name if seen[name] == 1 else f"{name}#{seen[name]}", cb))
        return keys


def _chunks(n: int, k: int) -> list[slice]:
    """Split n rows into at most k nearly equal consecutive slices."""
    k = min(k, n)
    bounds = [round(i * n / k) for i in range(k + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def onednn_safe(device: torch.device) -> bool:
    """Whether oneDNN's convolution kernels may run a training step here: always on a GPU, and on a CPU with
    AVX-512 or with more than one thread. On an AVX2-only CPU on one thread (torch 2.13, oneDNN 3.12; seen on an AMD
    EPYC), their backward corrupts the heap ("corrupted double-linked list", then an abort): a strided 1x1
    convolution in channels-last format, a U-Net over a frozen ResNet in either format."""
    return (device.type != "cpu" or torch.backends.cpu.get_cpu_capability().startswith("AVX512")
            or torch.get_num_threads() > 1)


@contextlib.contextmanager
def onednn_guard(device: torch.device, convolutions: bool = True) -> Iterator[None]:
    """A training step of a model with `convolutions` on `device`: as it is where `onednn_safe`, else with oneDNN off
    (PyTorch's own convolution kernels: slower, correct), said once a process."""
    if not convolutions or onednn_safe(device):
        yield
        return
    _said_onednn(torch.backends.cpu.get_cpu_capability())
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


@functools.cache
def _said_onednn(capability: str) -> None:
    """The warning, once a process."""
    warn(f"oneDNN is off while training on this CPU ({capability}, no AVX-512, one thread): its convolution "
         "backward corrupts memory there; PyTorch's own kernels run instead (slower)")

