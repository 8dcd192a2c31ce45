"""`dlforge prune RUN`: what a pruning run is given (the source run's config, fine-tuned from its weights with
train.prune), and what it reports in its prune.json: the real effect, measured.

Users of torch.nn.utils.prune ask why their pruned model is neither smaller nor faster. The report answers with
figures: parameters in all and not zero, the model file's size (a masked model's file is as large: its zeros are
stored densely) and what a sparse format would take (CSR: each nonzero's fp32 value and int32 column, and a row
pointer per row), the latency of source and pruned model at batch 1 and 64 in PyTorch (paired rounds, the order
alternating), and the test metrics before and after. A sweep (several sparsities) adds a sparsity-vs-metric curve.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dlforge.artifacts import load_trained, read_json
from dlforge.config import load_config
from dlforge.data.dataset import build_data
from dlforge.deploy.latency import paired_latency
from dlforge.deploy.onnx_run import batch_of
from dlforge.deploy.prune import measured_sparsity, prunable_layers
from dlforge.errors import ConfigError
from dlforge.runs.rundir import atomic_write_json, model_dir

REPORT_FILE = "prune.json"
LATENCY_BATCHES = (1, 64)


def prune_overrides(source: Path, sparsity: float, structured: bool, scope: str, schedule: str, steps: int,
                    lr_scale: float) -> list[str]:
    """The overrides that turn the source run's config into its pruning run, a new run beside it: start from its
    weights, prune, and fine-tune `steps` steps at `lr_scale` times its learning rate, cosine decay, no warmup."""
    cfg = load_config(source / "config.yaml")
    if sparsity <= 0 or sparsity >= 1:
        raise ConfigError(f"--sparsity: {sparsity}; expected a fraction between 0 and 1 (0.9: 90% removed)")
    prune = f"{{sparsity: {sparsity}, structured: {str(structured).lower()}, scope: {scope}, schedule: {schedule}}}"
    label = f"{'channels' if structured else 'sparse'}{round(100 * sparsity)}"
    every = max(1, min(steps, 500))
    return [f"name={cfg.name}-{label}", f"runs_dir={source.parent}", f"train.init_from={model_dir(str(source))}",
            f"train.prune={prune}",
            "train.transfer=null", "train.lora=null", "train.early_stopping=null", f"train.max_steps={steps}",
            "train.max_epochs=null", "train.warmup_steps=0", "train.scheduler=cosine",
            f"train.lr={cfg.train.lr * lr_scale:.6g}", f"train.eval_every={every}", f"train.checkpoint_every={every}"]


def prune_report(source: Path, pruned: Path, rounds: int = 10, finetune: dict[str, Any] | None = None, calls: int = 3
                 ) -> dict[str, Any]:
    """Measure the pruned run against its source (see the module docstring); write and return its prune.json.
    `finetune`: the fine-tuning's steps and seconds (the training loop alone), as the run reported them."""
    before, after = load_trained(source), load_trained(pruned)
    pruning = read_json(pruned / "model" / "pruning.json")
    cfg = load_config(pruned / "config.yaml")
    data = build_data(cfg)
    test = data.split("test") if data.test is not None else data.split("val")
    names = [spec["name"] for spec in read_json(pruned / "model" / "signature.json")["inputs"]]
    sizes = sorted({min(n, len(test)) for n in LATENCY_BATCHES})
    latency = {f"batch {n}": _latency(before, after, batch_of(test, range(n), names), rounds, calls) for n in sizes}
    metrics = {"before": _test_metrics(source), "after": _test_metrics(pruned)}
    report = {"source": source.name, "run": pruned.name, "model": after.registry_name, **pruning,
              "params": {"before": _params(before), "after": _params(after)},
              "file_bytes": {"before": (source / "model" / "model.safetensors").stat().st_size,
                             "after": (pruned / "model" / "model.safetensors").stat().st_size,
                             "after_sparse_csr": _csr_bytes(after)},
              "latency": latency, "metrics": metrics, "finetune": finetune, "notes": _notes(pruning, latency)}
    atomic_write_json(pruned / REPORT_FILE, report)
    return report


def _params(model: torch.nn.Module) -> dict[str, Any]:
    total = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(p.count_nonzero()) for p in model.parameters())
    return {"total": total, "nonzero": nonzero, "prunable_zero_fraction": measured_sparsity(model)}


def _csr_bytes(model: torch.nn.Module) -> int:
    """Bytes of the weights with each Conv2d/Linear weight in CSR (fp32 values, int32 columns and row pointers),
    the rest dense fp32: what storing the zeros sparsely would take."""
    sparse = {id(m.weight) for m in prunable_layers(model).values()}
    total = 0
    for p in model.state_dict(keep_vars=True).values():
        if id(p) in sparse:
            rows = p.shape[0]
            total += int(p.count_nonzero()) * 8 + (rows + 1) * 4
        else:
            total += p.numel() * p.element_size()
    return total


def _test_metrics(run: Path) -> dict[str, float]:
    evaluated = read_json(run / "eval.json")
    split = evaluated.get("test") or evaluated.get("val") or {}
    return {k: v for k, v in split.items() if isinstance(v, int | float)}


def _latency(before: torch.nn.Module, after: torch.nn.Module, batch: dict[str, torch.Tensor], rounds: int,
             calls: int) -> dict[str, Any]:
    """Each model's PyTorch latency on `batch` (`paired_latency`: before_ms, after_ms, the speedup)."""
    with torch.inference_mode():
        return paired_latency(("before", lambda: before(batch)), ("after", lambda: after(batch)),
                              len(next(iter(batch.values()))), rounds, calls)


def _notes(pruning: dict[str, Any], latency: dict[str, Any]) -> list[str]:
    if pruning.get("structured"):
        return []
    return ["unstructured pruning zeroes weights but keeps them: the model file is as large and PyTorch's dense "
            "kernels as fast (latency is the same within noise); the gain needs sparse storage (after_sparse_csr) "
            "or a sparse runtime"]


def write_sweep(source: Path, reports: list[dict[str, Any]]) -> Path:
    """A sweep's reports and curve (test accuracy, else loss) in runs/prune-sweep-SOURCE/: sweep.json, sweep.png."""
    folder = source.parent / f"prune-sweep-{source.name}"
    folder.mkdir(exist_ok=True)
    atomic_write_json(folder / "sweep.json", reports)
    metric = "accuracy" if "accuracy" in reports[0]["metrics"]["after"] else "loss"
    return sweep_plot(reports, metric, folder / "sweep.png")


def sweep_plot(reports: list[dict[str, Any]], metric: str, path: Path) -> Path:
    """The test `metric` against sparsity for a sweep of pruning runs, the source's as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["sparsity"] for r in reports]
    ys = [r["metrics"]["after"].get(metric) for r in reports]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(xs, ys, "o-", label="pruned + fine-tuned")
    ax.axhline(reports[0]["metrics"]["before"].get(metric), ls="--", color="gray", label="source")
    ax.set_xlabel("sparsity" if not reports[0].get("structured") else "channels removed")
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"{reports[0]['source']}: pruning sweep")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
