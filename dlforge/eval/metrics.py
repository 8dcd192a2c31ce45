"""Task metrics through torchmetrics, accumulated over batches and computed once per evaluation.

    metrics = TaskMetrics("classification", num_classes=10)
    for batch in loader:
        metrics.update(model(batch), batch)
    metrics.compute()  # {"accuracy": 0.91, "precision": ..., "recall": ..., "f1": ..., "auroc": ..., ...}

Classification: accuracy (micro, i.e. the share of correct predictions), macro precision, recall and F1, macro
one-vs-rest AUROC, top-5 accuracy when there are more than 5 classes, and the confusion matrix. Regression: MAE, RMSE
and R², in the original units of the target. Forecast: MAE, RMSE, MAPE, sMAPE and MASE of the model and of the
seasonal-naive forecast on the same targets, and rel_mae = mae / naive_mae (see `tm_metrics.ForecastErrors`).
Language modeling: next-token accuracy, perplexity (per token), bits per token and bits per character (see
`tm_metrics.TokenPredictions`); translation: the same on the teacher-forced target tokens, without bits per character
(BLEU and chrF need decoding: `dlforge.llm.translate`). Keys are plain names; the caller adds the split prefix (`val/`).
`TaskMetrics.from_info(bundle.info, loss, split)` asks the DataBundle's task (`dlforge.tasks`) for its metrics.
The torchmetrics states live in `dlforge.eval.tm_metrics`, imported when a metric set is built: torchmetrics takes
seconds to import, and a command that computes no metric does not pay for it.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch

from dlforge.layers.losses import to_probabilities
from dlforge.models.output import Output

if TYPE_CHECKING:  # torchmetrics takes seconds to import: `dlforge.eval.tm_metrics` loads it when a set is built
    from torchmetrics import Metric

# Metrics where smaller is better; anything ending in "loss" is too.
LOWER_IS_BETTER = ("loss", "mae", "mse", "rmse", "mape", "smape", "mase", "rel_mae", "naive_mae", "naive_rmse",
                   "naive_mape", "naive_smape", "naive_mase", "perplexity", "ppl", "nll", "bits_per_char", "bpc",
                   "bits_per_token", "error", "wer", "cer", "recon", "kl", "nll_iwae", "nll_pixels", "fid", "kid")


def lower_is_better(metric_name: str) -> bool:
    """True for metrics to minimize (loss, mae, rmse, perplexity, ...); a split prefix like `val/` is ignored."""
    name = metric_name.rsplit("/", 1)[-1].lower()
    return name in LOWER_IS_BETTER or name.endswith("loss")


class _ByTask(type):
    """`TaskMetrics(task, **options)` asks the registered task of that name for its metric set; a subclass called by
    its own name is built as usual."""

    def __call__(cls, *args: Any, **options: Any) -> Any:
        if cls is not TaskMetrics:
            return super().__call__(*args, **options)
        from dlforge.registry import create_task, list_tasks  # the ground floor: names to task plug-ins

        task = args[0] if args else options.pop("task", None)
        if task not in list_tasks():
            raise ValueError(f"unknown task {task!r}; expected one of {', '.join(list_tasks())}")
        return create_task(task).metric_set(**options)


class TaskMetrics(metaclass=_ByTask):
    """A task's metrics, accumulated over `update()` calls; `compute()` returns them as plain floats.

    Each task (`dlforge.tasks`) picks its own subclass below: `TaskMetrics.from_info(bundle.info, loss, split)` asks
    the task a DataBundle names, and `TaskMetrics("classification", num_classes=10)` asks the task of that name with
    the options of its metric set (see `Task.metric_set`).

    Classification takes `output.logits` of shape (B, C) (or (B, 1) with `loss_name="bce"`, read as two classes) and
    `batch["y"]` class ids (B,). Regression takes (B, 1) outputs and (B,) targets, both standardized with
    `target_mean` and `target_std`; the metrics are computed after undoing that scaling. Forecast takes (B, H * T)
    outputs, `batch["y"]` and `batch["naive"]` of the same shape, horizon-major, scaled per target column with
    `target_mean` and `target_std` (lists of T; for min-max scaling the minimum and the range), and `mase_scale` per
    target column in original units. Language modeling takes (B, T, V) logits and `batch["labels"]` (B, T), -100
    ignored, and `chars_per_token` of the text (1 for characters; None: no bits per character).
    """

    task = ""
    num_classes: int | None = None
    loss_name = ""
    target_mean: float | list[float] = 0.0
    target_std: float | list[float] = 1.0

    def __init__(self, metrics: Metric):
        self.metrics = metrics
        self.updates = 0

    @classmethod
    def from_info(cls, info: dict[str, Any], loss_name: str = "cross_entropy", split: str = "val") -> TaskMetrics:
        """The metrics of a DataBundle's task, configured by that task from the bundle's `info` (classes, target
        scaling, MASE scale; for language modeling the characters per token of `split`)."""
        from dlforge.registry import create_task, list_tasks

        task = info.get("task")
        if task not in list_tasks():
            raise ValueError(f"unknown task {task!r}; expected one of {', '.join(list_tasks())}")
        return create_task(task).metrics(info, loss_name, split)

    @torch.no_grad()
    def update(self, output: Output, batch: dict[str, torch.Tensor]) -> None:
        """Add one batch: the model's `output.logits` against the batch's targets."""
        self._update(output.logits.detach(), batch)
        self.updates += 1

    def _update(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        """The metrics over everything since the last `reset()`; empty if nothing was added."""
        if self.updates == 0:
            return {}
        return {name: float(value) for name, value in self.metrics.compute().items()}

    def confusion_matrix(self) -> list[list[int]] | None:
        """Counts with true classes as rows and predicted classes as columns; None for regression or before data."""
        return None

    def reset(self) -> None:
        """Forget everything added so far."""
        self.metrics.reset()
        self.updates = 0

    def to(self, device: torch.device | str) -> TaskMetrics:
        """Move the metric states to `device` (where the logits will be); returns self."""
        self.metrics.to(device)
        return self


class ClassificationMetrics(TaskMetrics):
    """Accuracy, macro precision/recall/F1, macro one-vs-rest AUROC, top-5 accuracy (> 5 classes), confusion."""

    task = "classification"

    def __init__(self, num_classes: int | None = None, loss_name: str = "cross_entropy"):
        if num_classes is None and loss_name == "bce":
            num_classes = 2
        if num_classes is None or num_classes < 2:
            raise ValueError(f"classification needs num_classes >= 2, got {num_classes}")
        if loss_name == "bce" and num_classes != 2:
            raise ValueError(f"loss 'bce' is binary: num_classes must be 2, got {num_classes}")
        from dlforge.eval.tm_metrics import classification_metrics

        super().__init__(classification_metrics(num_classes))
        self.num_classes, self.loss_name = num_classes, loss_name

    def _update(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        self.metrics.update(to_probabilities(logits, self.loss_name), batch["y"].detach().long())  # (B, C), (B,)

    def compute(self) -> dict[str, float]:
        if self.updates == 0:
            return {}
        with warnings.catch_warnings():
            # Classes absent from the targets make torchmetrics warn about their ROC; `_macro_auroc` skips them.
            warnings.filterwarnings("ignore", message="No (positive|negative) samples in targets")
            values = self.metrics.compute()
        result = {}
        for name, value in values.items():
            if name == "confusion":
                continue
            if name == "auroc":
                result[name] = _macro_auroc(value, support=values["confusion"].sum(dim=1))
            else:
                result[name] = float(value)
        return result

    def confusion_matrix(self) -> list[list[int]] | None:
        if self.updates == 0:
            return None
        return self.metrics["confusion"].compute().long().tolist()


class RegressionMetrics(TaskMetrics):
    """MAE, RMSE and R², in the original units of the target."""

    task = "regression"

    def __init__(self, target_mean: float = 0.0, target_std: float = 1.0, loss_name: str = "mse"):
        from dlforge.eval.tm_metrics import regression_metrics

        super().__init__(regression_metrics())
        self.target_mean, self.target_std, self.loss_name = target_mean, target_std, loss_name

    def _update(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        pred = logits.float().squeeze(-1) * self.target_std + self.target_mean  # (B,)
        self.metrics.update(pred, batch["y"].detach().float() * self.target_std + self.target_mean)


class ForecastMetrics(TaskMetrics):
    """`ForecastErrors` of the model and of the seasonal-naive forecast carried in `batch["naive"]`."""

    task = "forecast"

    def __init__(self, target_mean: float | list[float] = 0.0, target_std: float | list[float] = 1.0,
                 mase_scale: float | list[float] | None = None, loss_name: str = "mse"):
        from dlforge.eval.tm_metrics import ForecastErrors

        super().__init__(ForecastErrors(target_mean, target_std, mase_scale))
        self.target_mean, self.target_std, self.loss_name = target_mean, target_std, loss_name

    def _update(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        naive = batch.get("naive")
        self.metrics.update(logits, batch["y"].detach(), None if naive is None else naive.detach())


class TokenMetrics(TaskMetrics):
    """`TokenPredictions` of (B, T, V) logits against `batch["labels"]` (B, T): language modeling, and translation's
    teacher-forced target tokens (without bits per character)."""

    def __init__(self, task: str = "language_modeling", chars_per_token: float | None = 1.0, loss_name: str = ""):
        from dlforge.eval.tm_metrics import TokenPredictions

        super().__init__(TokenPredictions(chars_per_token))
        self.task, self.loss_name = task, loss_name

    def _update(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        self.metrics.update(logits, batch["labels"].detach())


def _macro_auroc(per_class: torch.Tensor, support: torch.Tensor) -> float:
    """Mean one-vs-rest AUROC over the classes present in the targets; nan if fewer than two are."""
    present = support > 0
    if int(present.sum()) < 2:
        return float("nan")
    return float(per_class[present].mean())
