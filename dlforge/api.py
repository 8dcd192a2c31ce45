"""The Python API, which the CLI mirrors: `train`, `evaluate`, `predict`, `load`.

    import dlforge
    result = dlforge.train("breast-cancer-mlp", ["train.lr=3e-3"])
    model = dlforge.load(result.run_dir)
    rows = dlforge.predict(result.run_dir, "new_patients.csv")

A run goes: config -> data (registry) -> model (registry, with data-derived sizes and the task's options) -> Trainer
with callbacks -> final model folder (best weights, the task's signature) -> evaluation on every split with the
task's metrics and decoded scores -> the task's test report and plots, model card, run registry. Everything that
differs between tasks is asked of the task (`dlforge.tasks`), never decided here by its name. Using a trained run
(`load`, `evaluate`, `predict`) lives in `dlforge.inference`, re-exported here.
"""

from __future__ import annotations

import contextlib
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dlforge.artifacts import read_json, save_model
from dlforge.config import QUICK_OVERRIDES, Config, dump_config, load_config
from dlforge.data.dataset import DataBundle, build_data  # noqa: F401  (build_data: the public API)
from dlforge.deploy.distill import build_distiller, teacher_record, unwrap
from dlforge.errors import ConfigError, DlforgeError, Interrupted, note, raising_on_signals, warn
from dlforge.eval.evaluate import evaluate_model, limit_splits
from dlforge.inference import evaluate, load, predict  # noqa: F401  (the public API: using a trained run)
from dlforge.paths import output_folder
from dlforge.registry import create_model, create_task
from dlforge.run_start import (
    RUN_FILE,
    init_from,  # noqa: F401  (the public API)
    load_start,
    prepare_pruning,
    recorded_start,
)
from dlforge.runs.history import compare_runs, list_runs, show_run  # noqa: F401  (the public API)
from dlforge.runs.registry import RunRegistry, git_revision
from dlforge.runs.rundir import (
    atomic_write_json,
    atomic_write_text,
    lock_run_dir,
    new_run_dir,
    resolve_run,
)
from dlforge.tasks.base import RunReport, Task
from dlforge.train import distributed
from dlforge.train.callbacks import (
    EMA,
    Checkpointer,
    EarlyStopping,
    FlopsUtilization,
    MetricsLogger,
    Plots,
    ProgressBar,
)
from dlforge.train.checkpoint import load_latest_checkpoint
from dlforge.train.trainer import Trainer, seed_everything


@dataclass
class RunResult:
    run_dir: Path
    status: str  # completed | interrupted
    stop_reason: str  # max_steps, max_epochs, early_stopping: ..., SIGINT, SIGTERM
    steps: int
    wall_s: float
    fit_s: float = 0.0  # the training loop alone (wall_s adds data loading, the final evaluation and the reports)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> metric -> value
    # the weights `metrics` are of: {"checkpoint": "best", "step", "epoch", "metric", "value"} or
    # {"checkpoint": "last", "step"}
    weights: dict[str, Any] = field(default_factory=dict)
    eval_note: str = ""  # when the metrics come from part of each split (train.limit_eval_batches)
    main_process: bool = True  # False in the other processes of a distributed run, which report nothing

    @property
    def weights_text(self) -> str:
        """'best checkpoint (step 40, val/loss 0.3121)' or 'final weights (step 60)'."""
        return describe_weights(self.weights)

    @property
    def exit_code(self) -> int:
        """0 for a finished run; for one stopped by a signal the shell's code for it (130 SIGINT, 143 SIGTERM), so
        `dlforge train X && dlforge eval latest` does not go on after an interrupted run."""
        if self.status != "interrupted":
            return 0
        signum = getattr(signal.Signals, self.stop_reason, None)
        return 128 + int(signum) if signum is not None else 1


def build_model(cfg: Config, data: DataBundle) -> torch.nn.Module:
    """The configured model, with the sizes the data dictates (in/out features, classes, class weights...).

    The data offers every size it knows (`model_defaults`); the model takes those its config has.
    """
    from dlforge.registry import config_fields, model_entry

    name = cfg.model["name"]
    fields = set(config_fields(model_entry(name).config_cls))
    user = {k: v for k, v in cfg.model.items() if k != "name"}
    user = create_task(data.info.get("task")).model_options(user, fields, data.info, cfg.data["name"])
    defaults = {k: v for k, v in data.model_defaults.items() if k in fields}
    model = create_model(name, **{**user, **defaults})
    window, needed = getattr(model.config, "context", None), data.info.get("context")
    if window is not None and needed is not None and needed > window:
        raise ConfigError(f"model.context: {window} tokens, fewer than the {needed} of each sample (data.context); "
                          f"set model.context >= {needed}")
    return model


def train(config: Config | str | Path | dict, overrides: list[str] | None = None, run_dir: str | Path | None = None,
          resume: str | Path | None = None, allow_changes: bool = False, quick: bool = False) -> RunResult:
    """Train a preset, a YAML file or a config dict; or resume a run (`resume=` its folder or name), where
    overrides that change its schedule (`dlforge.train.optim.schedule_changes`) are refused unless `allow_changes`.
    `quick` puts `dlforge.config.QUICK_OVERRIDES` (a short run) before the overrides.

    One process writes a run folder at a time (`lock_run_dir`): a second one is refused, naming the first. SIGINT and
    SIGTERM stop the training loop at a checkpoint; outside the loop (the final evaluation, say) they stop the work
    where it is. Either way the run is recorded as interrupted and `exit_code` says which signal it was.
    """
    with raising_on_signals(), contextlib.ExitStack() as held:  # `held` keeps the run folder locked until the end
        return _train(config, overrides, run_dir, resume, held, allow_changes, quick)


def _train(config: Config | str | Path | dict, overrides: list[str] | None, run_dir: str | Path | None,
           resume: str | Path | None, held: contextlib.ExitStack, allow_changes: bool, quick: bool) -> RunResult:
    start = time.perf_counter()
    overrides = [*QUICK_OVERRIDES, *(overrides or [])] if quick else overrides
    if run_dir is not None:
        output_folder(run_dir, "the run folder (run_dir)")
    if resume is not None:
        run_path = resolve_run(str(resume), _runs_dir(config), finished=False)  # latest: finished or not
        cfg = load_config(run_path / "config.yaml", overrides)
        if not allow_changes:
            _refuse_schedule_changes(load_config(run_path / "config.yaml"), cfg)
    elif isinstance(config, Config):
        cfg = load_config(config.model_dump(mode="json"), overrides) if overrides else config
    else:
        cfg = load_config(config, overrides)
    info = distributed.setup(cfg.train.device)
    if resume is not None and info.is_main:
        held.enter_context(lock_run_dir(run_path))  # before any work: a second writer is refused at once
    # before the run folder: bad data leaves nothing behind; a resume has every weight in its checkpoint, and what
    # they started from in run.json
    data, model, started_from = _data_and_model(cfg, fresh=resume is None)
    if resume is not None:
        started_from = recorded_start(run_path)
    t = cfg.train
    loss_name = getattr(model.config, "loss", "")
    # before the run folder exists too: a setting the Trainer refuses (a warmup longer than the run...) leaves nothing
    task = create_task(data.info.get("task"))
    trainer = task.trainer_class(model)(model, t, data.train, data.val, metrics=task.metrics(data.info, loss_name),
                                        num_workers=cfg.data_config().num_workers, batch_transform=data.augment)
    if resume is None:
        run_path = _broadcast_path(info, lambda: _new_run(cfg, run_dir, held))
    ckpt_dir = run_path / "checkpoints"
    callbacks = [MetricsLogger(run_path, tensorboard=t.tensorboard)]
    if t.early_stopping is not None:
        es = t.early_stopping
        callbacks.append(EarlyStopping(es.metric or t.monitor, es.mode, es.patience, es.min_delta))
    monitor = t.monitor if data.val is not None else None  # no validation split: no best tracking
    if t.prune is not None and t.prune.schedule == "gradual":  # weights pruned less than asked: never "best"
        monitor = None
    callbacks.append(Checkpointer(ckpt_dir, t.checkpoint_every, t.keep_checkpoints, monitor, t.monitor_mode))
    if t.prune is not None and not t.prune.structured:  # first: every other callback sees the pruned weights
        from dlforge.deploy.prune import Pruner

        callbacks.insert(0, Pruner(t.prune))
    if t.ema is not None:  # after the Checkpointer: the best checkpoint is saved with the average swapped in
        callbacks.append(EMA(t.ema.decay, t.ema.warmup))
    if t.mfu:
        callbacks.insert(0, FlopsUtilization(model.flops_per_token(data.info.get("context"))))  # before the loggers
    if t.progress:
        callbacks.append(ProgressBar(t.progress_every))
    callbacks.append(Plots(run_path))
    trainer.callbacks = callbacks
    if resume is not None:
        _restore(trainer, ckpt_dir)
    registry = RunRegistry(run_path.parent) if info.is_main else None
    if info.is_main:  # after the restore: a resume refused there (another model shape...) leaves the run as it was
        atomic_write_text(run_path / "config.yaml", dump_config(cfg))  # as written: init_from: latest:NAME stays
        if resume is None:
            atomic_write_json(run_path / RUN_FILE, {"started_from": started_from, **teacher_record(model)})
        registry.start(run_path.name, str(run_path), cfg.name, cfg.hash(), data.fingerprint, git_revision())
    try:
        fit_start = time.perf_counter()
        try:
            trainer.fit()
        finally:
            distributed.cleanup(info)
        result = RunResult(run_path, "interrupted" if trainer.interrupted else "completed", trainer.stop_reason,
                           trainer.step, 0.0, time.perf_counter() - fit_start, main_process=info.is_main)
        if info.is_main and not trainer.interrupted:
            model = unwrap(model)  # a distilled run saves, evaluates and describes the student alone
            evaluated, limited = limit_splits(data, t.limit_eval_batches, trainer.eval_batch_size)
            result.metrics, result.weights = _finalize(cfg, run_path, model, evaluated, trainer, task, started_from,
                                                       limited)
            result.eval_note = _evalnote(limited)
            result.wall_s = time.perf_counter() - start
            _write_card(cfg, run_path, model, data, result, task, started_from)
    except (Interrupted, KeyboardInterrupt) as exc:  # outside the loop, which stops cleanly: the final evaluation
        if registry is None:
            raise
        signame = exc.signal.name if isinstance(exc, Interrupted) else "SIGINT"
        result = RunResult(run_path, "interrupted", signame, trainer.step, 0.0)
    except BaseException as exc:
        if registry is not None:
            _record_failure(registry, run_path.name, exc)
        raise
    result.wall_s = time.perf_counter() - start
    if registry is not None:
        registry.finish(run_path.name, result.status, _registry_metrics(result))
    return result


def _restore(trainer: Trainer, ckpt_dir: Path) -> None:
    """Load the run's newest valid checkpoint into `trainer`."""
    found = load_latest_checkpoint(ckpt_dir, warn=warn)
    if found is not None:
        trainer.load_state_dict(found[1], source=str(found[0] / "state.safetensors"))
        note(f"resumed from {found[0].name} (step {trainer.step})")
    else:  # killed before its first checkpoint: start over in the same folder
        (ckpt_dir.parent / "metrics.jsonl").unlink(missing_ok=True)


def _record_failure(registry: RunRegistry, name: str, exc: BaseException) -> None:
    """Mark the run failed. When even that write fails (the full disk that ended the run, say), the error that ended
    the run is still the one reported; this one is a warning."""
    try:
        registry.finish(name, "failed", {"error": str(exc)[:500]})
    except DlforgeError as also:
        warn(f"the run could not be marked failed: {also}")


def _registry_metrics(result: RunResult) -> dict[str, Any]:
    if result.status != "completed":
        return {"step": result.steps}
    return {f"{s}/{k}": v for s, m in result.metrics.items() for k, v in m.items() if isinstance(v, int | float)}


def _data_and_model(cfg: Config, fresh: bool) -> tuple[DataBundle, torch.nn.Module, dict[str, str] | None]:
    """The data and the model ready to train: seeded, built, with the transfer backbone or the init_from weights
    loaded (a fresh run only: a resume has every weight in its checkpoint), frozen as train.transfer says, LoRA
    adapters added, wrapped with train.distill's teacher; and what the weights started from (`_load_start`: None
    from scratch or on a resume)."""
    seed_everything(cfg.train.seed)
    data = build_data(cfg)
    model = build_model(cfg, data)
    if cfg.train.mfu and not callable(getattr(model, "flops_per_token", None)):
        raise ConfigError(f"train.mfu: model {cfg.model['name']!r} does not report its FLOPs per token")
    started_from = load_start(model, cfg, data.tokenizer) if fresh else None
    if cfg.train.transfer is not None:
        from dlforge.train import transfer

        transfer.freeze(model, cfg.train.transfer.freeze)
    if cfg.train.lora is not None:
        from dlforge.llm.lora import add_lora

        add_lora(model, cfg.train.lora)
    if cfg.train.prune is not None:
        prepare_pruning(model, cfg, data, fresh)
    if cfg.train.distill is not None:  # on a resume too: the teacher is in no checkpoint
        model = build_distiller(model, cfg.train.distill, cfg.runs_dir, data)
    return data, model, started_from


def prune(run: str | Path, sparsities: list[float], structured: bool = False, finetune_steps: int = 500,
          scope: str = "global", schedule: str = "oneshot", lr_scale: float = 0.1, overrides: list[str] | None = None,
          rounds: int = 10) -> list[dict[str, Any]]:
    """Prune a trained run and fine-tune it, once per sparsity: each a new run (`dlforge.deploy.prune_report`) with
    its prune.json, returned. A sweep (several sparsities) also writes runs/prune-sweep-SOURCE/ (sweep.json, .png)."""
    from dlforge.deploy.prune_report import prune_overrides, prune_report, write_sweep

    source = resolve_run(str(run))
    reports = []
    for sparsity in sparsities:
        given = prune_overrides(source, sparsity, structured, scope, schedule, finetune_steps, lr_scale)
        result = train(source / "config.yaml", [*given, *(overrides or [])])
        if result.status != "completed":  # a signal stopped the fine-tuning: the run stays, to resume
            raise Interrupted(int(getattr(signal.Signals, str(result.stop_reason), signal.SIGINT)))
        reports.append(prune_report(source, result.run_dir, rounds, {"steps": result.steps, "seconds": result.fit_s}))
    if len(reports) > 1:
        write_sweep(source, reports)
    return reports


def lr_find(config: Config | str | Path | dict, overrides: list[str] | None = None, start: float = 1e-7,
            end: float = 10.0, steps: int = 100) -> dict[str, Any]:
    """The learning-rate range test (`dlforge.train.lr_find`) on a preset's data and model, as training would build
    them; nothing is saved as a run. The plot goes to `<runs_dir>/lr-find-<name>.png`."""
    from dlforge.runs.plots import plot_lr_range
    from dlforge.train.lr_find import lr_range_test

    cfg = config if isinstance(config, Config) else load_config(config, overrides)
    data, model, _ = _data_and_model(cfg, fresh=True)
    result = lr_range_test(model, cfg.train, data.train, start, end, steps, num_workers=cfg.data_config().num_workers,
                           batch_transform=data.augment)
    plot = plot_lr_range(result.lrs, result.losses, result.smoothed, result.suggestion,
                         Path(cfg.runs_dir) / f"lr-find-{cfg.name}.png")
    return {"suggestion": result.suggestion, "min_loss_lr": result.min_loss_lr, "diverged_at": result.diverged_at,
            "start": start, "end": end, "steps": len(result.lrs), "plot": str(plot), "lrs": result.lrs,
            "losses": result.losses, "smoothed": result.smoothed}


def _refuse_schedule_changes(saved: Config, cfg: Config) -> None:
    """Refuse a resume whose overrides change the schedule, or the data (whose size sets an epoch's steps), of the
    run: each key named with its old and new value."""
    from dlforge.train.optim import schedule_changes

    old, new = saved.data, cfg.data
    keys = sorted((set(old) | set(new)) - {"num_workers"})
    changes = [f"data.{k} {old.get(k)} -> {new.get(k)}" for k in keys if old.get(k) != new.get(k)]
    changes += schedule_changes(saved.train, cfg.train)
    if changes:
        raise ConfigError(f"--resume: {', '.join(changes)} would change the data or the schedule of the run being "
                          "resumed; pass --allow-changes to resume with them anyway")


def _runs_dir(config: Any) -> str:
    return config.runs_dir if isinstance(config, Config) else "runs"


def _new_run(cfg: Config, run_dir: str | Path | None, held: contextlib.ExitStack) -> Path:
    """A fresh run folder (`run_dir`, or a new one in runs_dir), locked for this process until `held` closes."""
    if run_dir is None:
        path = new_run_dir(cfg.runs_dir, cfg.name)
        held.enter_context(lock_run_dir(path))
        return path
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    held.enter_context(lock_run_dir(path))  # before looking: of two processes given one --run-dir, one goes on
    if (path / "config.yaml").exists():
        raise DlforgeError(f"{path}: already holds a run; continue it with --resume {path}")
    return path


def _broadcast_path(info: distributed.DistInfo, make) -> Path:
    """Rank 0 creates the run folder; every rank learns its path."""
    if not info.enabled:
        return make()
    box = [str(make()) if info.is_main else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return Path(box[0])


def _finalize(cfg: Config, run_path: Path, model: torch.nn.Module, data: DataBundle, trainer: Trainer,
              task: Task, started_from: dict[str, str] | None, limited: dict[str, Any]) -> tuple[dict, dict]:
    """Best weights -> model/ folder; metrics on every split -> eval.json; the task's report and plots. Returns the
    metrics and which weights they are of. `data`'s splits may be cut by train.limit_eval_batches, which `limited`
    records (see `limit_splits`) in eval.json."""
    from dlforge.artifacts import load_weights
    from dlforge.runs.plots import plot_scores

    best = run_path / "checkpoints" / "best"
    if (best / "model.safetensors").exists():
        load_weights(model, best / "model.safetensors")
        weights = {"checkpoint": "best", **read_json(best / "best.json")}  # step, epoch, metric, value
    else:
        weights = {"checkpoint": "last", "step": trainer.step}
    extra = {"preprocessing.json": data.preprocessing, "data_info.json": _jsonable(data.info)}
    if cfg.train.prune is not None:  # masks applied and removed; a smaller architecture recorded
        from dlforge.deploy.prune import PRUNING_FILE, finish

        extra[PRUNING_FILE] = finish(model, cfg.train.prune)
    if data.tokenizer is not None:  # the tokenizer travels with the model, its hash recorded beside
        extra["preprocessing.json"] = {**data.preprocessing, "tokenizer_hash": data.tokenizer.hash}
        extra.update(data.tokenizer.files())
    if cfg.train.lora is not None:  # adapter/ alone (over its base), and model/ the base with the adapter merged
        from dlforge.llm.lora import merge_lora, save_adapter

        base = started_from["path"] if started_from else cfg.train.init_from  # the folder it resolved to then
        save_adapter(model, run_path / "adapter", base=base, tokenizer=data.tokenizer)
        merge_lora(model)
    extra["signature.json"] = task.signature(data, model)  # inputs and outputs, for export and serving
    save_model(model, run_path / "model", extra_files=extra)
    metrics: dict[str, Any] = {}
    reports: dict[str, Any] = {}
    scores: dict[str, dict[str, float]] = {}  # measured at the end only (BLEU...): plotted apart
    loss_name = getattr(model.config, "loss", "")
    say = note if cfg.train.progress else lambda message: None
    for split in ("train", "val", "test"):
        ds = data.split(split, evaluation=True)
        if ds is None:
            continue
        say(f"evaluating the {describe_weights(weights)} on {split} ({len(ds)} samples)")
        tm = task.metrics(data.info, loss_name, split)
        metrics[split] = evaluate_model(model, ds, tm, device=trainer.device, autocast_dtype=trainer.autocast_dtype)
        if split == "test":
            reports.update(task.test_report(RunReport(cfg.name, run_path, model, data, trainer.device, tm)))
        decoded = None if split == "train" else task.decoded_scores(model, ds, data.info, data.tokenizer,
                                                                    {"extra": extra}, train=data.train)  # BLEU...
        if decoded is not None:
            metrics[split].update(decoded[0])
            if decoded[0]:  # a report alone (FID skipped, say why) has nothing to plot
                scores[split] = decoded[0]
            reports.setdefault(task.report_key, {})[split] = decoded[1]
    if scores:
        plot_scores(scores, run_path / "plots" / "scores.png", title=f"{cfg.name}: {describe_weights(weights)}")
    limits = {"eval_limited": limited} if limited else {}
    atomic_write_json(run_path / "eval.json", {"step": trainer.step, "stop_reason": trainer.stop_reason,
                                               "weights": weights, "world_size": trainer.dist.world_size, **limits,
                                               **metrics, **reports})
    return metrics, weights


def describe_weights(weights: dict[str, Any]) -> str:
    """Which weights a run's final metrics are of: 'best checkpoint (step 40, val/loss 0.3121)' or 'final weights
    (step 60)'."""
    if weights.get("checkpoint") == "best":
        return f"best checkpoint (step {weights['step']}, {weights['metric']} {weights['value']:.4g})"
    return f"final weights (step {weights['step']})"


def _evalnote(limited: dict[str, Any]) -> str:
    """One line saying that the final metrics come from part of each split, or "" when they cover it all."""
    if not limited:
        return ""
    limit = limited["limit_eval_batches"]
    parts = ", ".join(f"{split} {n:,} of {total:,}" for split, (n, total) in limited["samples"].items())
    return f"metrics from part of each split (train.limit_eval_batches {limit}): {parts} samples"


def _write_card(cfg: Config, run_path: Path, model: torch.nn.Module, data: DataBundle, result: RunResult,
                task: Task, started_from: dict[str, str] | None) -> None:
    from dlforge.runs.card import write_model_card

    params = sum(p.numel() for p in model.parameters())
    info = _jsonable(data.info)
    info["split_sizes"] = {s: len(getattr(data, s)) for s in ("train", "val", "test") if getattr(data, s) is not None}
    write_model_card(run_path, name=cfg.name, config=cfg.model_dump(mode="json"), info=info,
                     metrics=result.metrics, params=params, wall_s=result.wall_s, weights=result.weights_text,
                     predict=task.predict_input(data.preprocessing), started_from=started_from,
                     eval_note=result.eval_note)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if isinstance(v, str | int | float | bool | list | dict | type(None))}
